//! What librdkafka tells the bus about its connections, through the client callbacks: broker
//! states and lag from the statistics, "all brokers down" from the error callback, and the
//! partitions that rebalances take away.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Statistics;

use crate::observe::ConnectionState;

const CONNECTED: u8 = 0;
const DISCONNECTED: u8 = 1;
const CLOSED: u8 = 2;

/// The connection state of a bus's clients, shared by all of them.
#[derive(Default)]
pub(super) struct Link {
    state: AtomicU8,
    /// Counts the returns from an outage: the broker may have restarted without the topics
    /// the bus created (a broker with in-memory storage).
    reconnects: AtomicU64,
    /// Partitions that rebalances took from the bus's consumers while they ran.
    revoked: AtomicU64,
}

impl Link {
    pub(super) fn state(&self) -> ConnectionState {
        match self.state.load(Ordering::Relaxed) {
            CONNECTED => ConnectionState::Connected,
            DISCONNECTED => ConnectionState::Disconnected,
            _ => ConnectionState::Closed,
        }
    }

    pub(super) fn up(&self) {
        if self
            .state
            .compare_exchange(DISCONNECTED, CONNECTED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.reconnects.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(super) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Acquire)
    }

    pub(super) fn revoked(&self) -> u64 {
        self.revoked.load(Ordering::Relaxed)
    }

    fn down(&self) {
        let _ = self.state.compare_exchange(
            CONNECTED,
            DISCONNECTED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(super) fn close(&self) {
        self.state.store(CLOSED, Ordering::Relaxed);
    }
}

/// The context of every client of a bus; a consumer's also records its topic's lag.
pub(crate) struct KafkaContext {
    link: Arc<Link>,
    /// The consumer's topic and where to put its lag (`-1`: unknown).
    lag: Option<(String, Arc<AtomicI64>)>,
    /// Set when the consumer leaves its group: what it gives up then is not taken from it.
    leaving: AtomicBool,
}

impl KafkaContext {
    pub(super) fn new(link: Arc<Link>) -> Self {
        KafkaContext {
            link,
            lag: None,
            leaving: AtomicBool::new(false),
        }
    }

    pub(super) fn consumer(link: Arc<Link>, topic: &str, lag: Arc<AtomicI64>) -> Self {
        KafkaContext {
            link,
            lag: Some((topic.to_string(), lag)),
            leaving: AtomicBool::new(false),
        }
    }

    /// The consumer is about to leave its group (its close).
    pub(super) fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, stats: Statistics) {
        let brokers = stats.brokers.values().filter(|b| b.nodeid >= 0);
        let (mut up, mut down, mut all) = (0, 0, 0);
        for b in brokers {
            all += 1;
            match b.state.as_str() {
                "UP" => up += 1,
                "DOWN" => down += 1,
                _ => {}
            }
        }
        if up > 0 {
            self.link.up();
        } else if all > 0 && down == all {
            self.link.down();
        }
        if let Some((topic, lag)) = &self.lag {
            if let Some(t) = stats.topics.get(topic) {
                // Per assigned partition: the end of the log minus what was handled (stored
                // for commit), committed, or else the start of the log.
                let known: Vec<i64> = t
                    .partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.desired && p.hi_offset >= 0)
                    .map(|p| {
                        let done = [p.stored_offset, p.committed_offset, p.lo_offset, 0]
                            .into_iter()
                            .find(|o| *o >= 0)
                            .unwrap_or(0);
                        (p.hi_offset - done).max(0)
                    })
                    .collect();
                if !known.is_empty() {
                    lag.store(known.iter().sum(), Ordering::Relaxed);
                }
            }
        }
    }

    /// Transient connection errors come here too; librdkafka retries them itself, and health
    /// shows the outage, so only "all brokers down" is kept.
    fn error(&self, error: KafkaError, _reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.link.down();
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if !self.leaving.load(Ordering::Relaxed) {
                let n = partitions.count() as u64;
                self.link.revoked.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}
