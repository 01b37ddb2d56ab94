//! The subscriptions of one bus on a broker that keeps the groups itself (Kafka, NATS): one per
//! topic and group, as on the memory broker, each with the lag state its backend keeps up to
//! date. Membership ends when the subscription drops its [`Member`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::SubscribeError;
use crate::topic::TopicName;

type Key = (TopicName, String);

/// Who is subscribed, and the lag state of each.
pub(crate) struct Members<L> {
    lags: Arc<Mutex<HashMap<Key, Arc<L>>>>,
}

impl<L> Default for Members<L> {
    fn default() -> Self {
        Members {
            lags: Arc::default(),
        }
    }
}

impl<L> Members<L> {
    /// Adds `group` on `topic` with its lag state, or refuses a second subscription of it.
    pub(crate) fn join(
        &self,
        topic: &TopicName,
        group: &str,
        lag: L,
    ) -> Result<Member<L>, SubscribeError> {
        let key = (topic.clone(), group.to_string());
        let mut lags = lock(&self.lags);
        if lags.contains_key(&key) {
            return Err(SubscribeError::AlreadySubscribed {
                topic: topic.clone(),
                group: group.to_string(),
            });
        }
        let lag = Arc::new(lag);
        lags.insert(key.clone(), lag.clone());
        Ok(Member {
            key,
            lag,
            lags: self.lags.clone(),
        })
    }

    /// What `read` makes of the lag state of `group` on `topic`, if it is subscribed.
    pub(crate) fn lag<T>(
        &self,
        topic: &TopicName,
        group: &str,
        read: impl FnOnce(&L) -> Option<T>,
    ) -> Option<T> {
        read(lock(&self.lags).get(&(topic.clone(), group.to_string()))?)
    }
}

/// One subscription's place in [`Members`], given up on drop.
pub(crate) struct Member<L> {
    key: Key,
    lag: Arc<L>,
    lags: Arc<Mutex<HashMap<Key, Arc<L>>>>,
}

impl<L> Member<L> {
    /// This subscription's lag state.
    pub(crate) fn lag(&self) -> &Arc<L> {
        &self.lag
    }
}

impl<L> Drop for Member<L> {
    fn drop(&mut self) {
        lock(&self.lags).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_member_per_group_until_it_leaves() {
        let members = Members::default();
        let t = TopicName::new("orders").unwrap();
        let first = members.join(&t, "g", 7u64).unwrap();
        let e = members.join(&t, "g", 0).err().unwrap();
        assert!(matches!(e, SubscribeError::AlreadySubscribed { .. }), "{e}");
        // Another group, or the same group on another topic, is another member.
        let other = members.join(&t, "h", 1).unwrap();
        let elsewhere = members
            .join(&TopicName::new("audit").unwrap(), "g", 2)
            .unwrap();
        assert_eq!(members.lag(&t, "g", |l| Some(*l)), Some(7));
        drop(first);
        assert_eq!(members.lag(&t, "g", |l| Some(*l)), None);
        let again = members.join(&t, "g", 3).unwrap();
        assert_eq!(**again.lag(), 3);
        drop((other, elsewhere));
    }
}
