//! Delivery: how a subscription's messages reach its handler. Messages with a key go to one
//! worker of the keyed pool chosen by the key's hash, so one key is handled one message at a
//! time in order; messages without a key go to the global pool. A failed handler call is
//! retried in place (the worker holds the key's later messages meanwhile, so order survives a
//! retry), then the message takes the dead-letter path.

mod call;
mod pool;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use call::{handler, Handler};
pub(crate) use pool::{start, SubscriptionCtx, Undecodable};

use crate::error::EnvelopeError;
use crate::message::Message;
use crate::topic::TopicName;

/// The slot (`0..n`) of a key: the same on every run, machine and build (FNV-1a, then
/// MurmurHash3's finalizer so that the low bits mix all of the key; `DefaultHasher` is neither
/// stable across Rust releases nor as cheap for short keys).
pub(crate) fn slot(key: &[u8], n: usize) -> usize {
    let mut h = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % n.max(1) as u64) as usize
}

/// Spawns `future` as a task named `name` (the name shows in leak reports when the `leakcheck`
/// feature is on).
pub(crate) fn spawn_named<F>(name: &str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(feature = "leakcheck")]
    {
        leakcheck::with_task_name(name, || tokio::spawn(future))
    }
    #[cfg(not(feature = "leakcheck"))]
    {
        let _ = name;
        tokio::spawn(future)
    }
}

/// How many times a handler is called for one delivery, and how long to wait between calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles at each retry.
    pub backoff: Duration,
    /// The longest wait between two calls.
    pub max_backoff: Duration,
}

/// Calls per delivery before the dead-letter path.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The first retry's wait.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between retries.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Where a message goes once its handler has failed every attempt, or when an envelope cannot
/// be decoded.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum DeadLetterPolicy {
    /// Published to `<topic>.dlq` with the original key, headers and payload, plus
    /// `eventbus-dead-letter-reason`, `eventbus-source-topic`, `eventbus-group` and
    /// `eventbus-attempts` headers; acknowledged once the dead-letter topic has it. If that
    /// publish fails, the message is not acknowledged: the broker delivers it again.
    #[default]
    Topic,
    /// Handed to a callback, then acknowledged.
    Callback(Arc<dyn Fn(DeadLetter) + Send + Sync>),
}

impl fmt::Debug for DeadLetterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterPolicy::Topic => f.write_str("Topic"),
            DeadLetterPolicy::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// A message on the dead-letter path.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The topic it came from.
    pub topic: TopicName,
    /// The group whose handler gave up.
    pub group: String,
    /// The message, raw bytes included, as its last attempt saw it (`attempt()` says which).
    pub message: Message,
    /// Why.
    pub reason: DeadLetterReason,
}

/// Why a message took the dead-letter path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The handler failed every attempt.
    HandlerFailed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last_error: String,
    },
    /// The payload is not an envelope this build can decode.
    Undecodable(EnvelopeError),
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetterReason::HandlerFailed {
                attempts,
                last_error,
            } => write!(f, "handler failed {attempts} time(s), last: {last_error}"),
            DeadLetterReason::Undecodable(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[leakcheck::leak_test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let waits: Vec<u128> = (1..=5).map(|a| r.backoff_after(a).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
    }

    #[leakcheck::leak_test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(slot(b"order-1", 7), slot(b"order-1", 7));
        assert!((0..1000).all(|i| slot(format!("k{i}").as_bytes(), 3) < 3));
        // Pinned: a change of the function would move keys between workers and partitions.
        assert_eq!(
            [slot(b"", 7), slot(b"order-42", 7), slot(b"agg-1", 1000)],
            [1, 3, 846]
        );
    }

    #[leakcheck::leak_test]
    fn keys_differing_in_one_character_spread_over_two_slots() {
        // Plain FNV-1a would put these by the parity of their bytes alone.
        let zeros = (0..1000)
            .filter(|i| slot(format!("agg-{i}").as_bytes(), 2) == 0)
            .count();
        assert!((400..=600).contains(&zeros), "{zeros} of 1000 in slot 0");
    }
}
