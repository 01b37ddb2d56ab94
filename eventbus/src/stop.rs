//! A stop signal that is cheap to check: [`CancellationToken::is_cancelled`] takes a lock, and
//! the bus checks for close once per message or more, from every publisher and worker at once;
//! the flag here is read without one. Waiting still goes through the token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A stop signal; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    flag: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Stop {
    /// Whether it was given.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Gives it: checks see it from now on, waits end.
    pub(crate) fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Ends once it is given.
    pub(crate) fn wait(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    async fn a_clone_sees_the_stop_and_its_waits_end() {
        let stop = Stop::default();
        let other = stop.clone();
        assert!(!other.is_set());
        let waiting = tokio::spawn(async move { other.wait().await });
        tokio::task::yield_now().await;
        stop.set();
        assert!(stop.is_set());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends")
            .unwrap();
        let late = stop.clone();
        assert!(late.is_set());
        late.wait().await;
    }
}
