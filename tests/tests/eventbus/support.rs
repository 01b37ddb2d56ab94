//! Fixtures: how the suite gets buses on one broker, and how it makes the broker unavailable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventbus::{BusBuilder, EventBus, MemoryBroker};

/// A broker the suite can connect buses to.
pub trait Fixture: Send + Sync {
    /// A new bus on this fixture's broker.
    fn bus(&self, builder: BusBuilder) -> EventBus;
    /// Makes the broker unavailable until [`Fixture::restore`].
    fn outage(&self);
    /// Ends the outage.
    fn restore(&self);
}

/// The in-process broker.
pub struct Memory(pub MemoryBroker);

impl Memory {
    pub fn new() -> Self {
        Memory(MemoryBroker::new())
    }
}

impl Fixture for Memory {
    fn bus(&self, builder: BusBuilder) -> EventBus {
        builder.memory(&self.0)
    }

    fn outage(&self) {
        self.0.pause();
    }

    fn restore(&self) {
        self.0.resume();
    }
}

/// A topic name no other test uses (tests may share a broker).
pub fn topic(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until `done()` holds, polling every millisecond, for at most `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
