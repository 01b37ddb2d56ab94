//! Health and metrics: what the bus can say about itself while it runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The state of the connection to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected.
    Connected,
    /// The broker cannot be reached; the client keeps trying.
    Disconnected,
    /// The bus was closed.
    Closed,
}

/// A snapshot of the bus's health.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Health {
    /// The broker connection.
    pub connection: ConnectionState,
    /// The last error the bus met (publish, handler or backend), if any.
    pub last_error: Option<String>,
    /// Per subscription (`topic`, `group`): messages published and not yet acknowledged, where
    /// the backend knows.
    pub lag: BTreeMap<(String, String), u64>,
}

/// Counters of the whole bus, since it was created.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) redeliveries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) undecodable: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    /// Messages waiting in worker queues, all subscriptions.
    pub(crate) queued: AtomicI64,
    /// The fullest one worker queue has been.
    pub(crate) queued_peak: AtomicI64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One more message waits in a worker queue, which now holds `occupancy` (read from the
    /// queue itself: the gauge can run one ahead while a worker takes a message but has not
    /// counted it yet).
    pub(crate) fn enqueued(&self, occupancy: usize) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        // Read first: a peak rarely moves, and a read leaves the line shared where a
        // read-modify-write takes it from the other cores every time.
        let occupancy = occupancy as i64;
        if occupancy > self.queued_peak.load(Ordering::Relaxed) {
            self.queued_peak.fetch_max(occupancy, Ordering::Relaxed);
        }
    }

    pub(crate) fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of the bus's counters and pools.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Messages the backend accepted.
    pub published: u64,
    /// Publishes refused or failed.
    pub publish_errors: u64,
    /// Deliveries received from the backend.
    pub delivered: u64,
    /// Deliveries whose handler returned `Ok` (then acknowledged).
    pub handled: u64,
    /// Handler calls that returned `Err` or panicked.
    pub handler_errors: u64,
    /// Handler calls repeated after an error.
    pub redeliveries: u64,
    /// Messages sent to the dead-letter path.
    pub dead_lettered: u64,
    /// Envelope deliveries that could not be decoded (they go to the dead-letter path).
    pub undecodable: u64,
    /// Messages handed back unacknowledged at close.
    pub handed_back: u64,
    /// Messages waiting in worker queues now.
    pub queued: u64,
    /// The most messages ever waiting in one worker queue (at most its capacity).
    pub queued_peak: u64,
    /// Partitions that consumer group rebalances took from this bus's subscriptions while they
    /// ran, their own close left out (Kafka; always 0 on the other backends). Rebalancing
    /// cooperatively (Kafka's default here), only partitions that change owner count.
    pub revoked_partitions: u64,
    /// The keyed pools' tasks (tokio-metrics); `None` unless [`BusBuilder::pool_metrics`] is
    /// on.
    ///
    /// [`BusBuilder::pool_metrics`]: crate::BusBuilder::pool_metrics
    pub keyed_pool: Option<PoolMetrics>,
    /// The global pools' tasks, as `keyed_pool`.
    pub global_pool: Option<PoolMetrics>,
}

/// What tokio-metrics measured of a pool's worker tasks.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// Worker tasks started.
    pub workers_started: u64,
    /// Worker tasks finished.
    pub workers_finished: u64,
    /// Time the workers spent being polled.
    pub busy: Duration,
    /// Time the workers spent waiting in the scheduler's queue once woken.
    pub scheduled: Duration,
}

impl PoolMetrics {
    pub(crate) fn of(monitor: &tokio_metrics::TaskMonitor) -> Self {
        let m = monitor.cumulative();
        PoolMetrics {
            workers_started: m.instrumented_count,
            workers_finished: m.dropped_count,
            busy: m.total_poll_duration,
            scheduled: m.total_scheduled_duration,
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        keyed: Option<&tokio_metrics::TaskMonitor>,
        global: Option<&tokio_metrics::TaskMonitor>,
    ) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            published: get(&self.published),
            publish_errors: get(&self.publish_errors),
            delivered: get(&self.delivered),
            handled: get(&self.handled),
            handler_errors: get(&self.handler_errors),
            redeliveries: get(&self.redeliveries),
            dead_lettered: get(&self.dead_lettered),
            undecodable: get(&self.undecodable),
            handed_back: get(&self.handed_back),
            queued: self.queued.load(Ordering::Relaxed).max(0) as u64,
            queued_peak: self.queued_peak.load(Ordering::Relaxed).max(0) as u64,
            revoked_partitions: 0,
            keyed_pool: keyed.map(PoolMetrics::of),
            global_pool: global.map(PoolMetrics::of),
        }
    }
}
