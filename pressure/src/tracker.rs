//! The receiving side's bookkeeping, and how a run knows it is done: every handled message is
//! recorded here (latency from its stamp, duplicates, per-aggregate order), and the run waits
//! for the moment the last distinct message of a phase is handled. No fixed sleep: a phase
//! ends when it is complete, or fails when nothing arrives for a stall timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::workload::{Stamp, Workload};

/// Nanoseconds since the first call in this process: the clock of every stamp.
pub fn clock() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
#[derive(Clone, Debug)]
pub struct Latency(hdrhistogram::Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(
            hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("valid histogram bounds"),
        )
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    /// Adds every value of `other` (for example one publisher's histogram into the run's).
    pub fn merge(&mut self, other: &Latency) {
        self.0
            .add(&other.0)
            .expect("histograms of the same bounds merge");
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest value, in milliseconds; 0 when empty.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// One phase's figures once it ended.
#[derive(Clone, Debug, Default)]
pub struct PhaseOutcome {
    /// Distinct messages handled.
    pub delivered: u64,
    /// Messages handled more than once (each extra delivery counts).
    pub duplicates: u64,
    /// First deliveries that came out of their aggregate's sequence.
    pub order_violations: u64,
    /// Publish-to-handled latency.
    pub latency: Latency,
    /// When the last distinct message was handled ([`clock`]).
    pub last_ns: u64,
}

struct State {
    deliveries: Vec<u8>,
    last_seq: Vec<u64>,
    duplicates: u64,
    order_violations: u64,
    latency: Latency,
    last_ns: u64,
}

/// What one phase expects and what it got so far.
pub struct Tracker {
    phase: u8,
    expected: u64,
    state: Mutex<State>,
    delivered: AtomicU64,
    /// Payloads that were not ours, or of another phase.
    foreign: AtomicU64,
    complete: Notify,
}

impl Tracker {
    /// A tracker of `phase` for `workload`'s messages.
    pub fn new(phase: u8, workload: &Workload) -> Self {
        Tracker {
            phase,
            expected: workload.messages,
            state: Mutex::new(State {
                deliveries: vec![0; workload.messages as usize],
                last_seq: vec![0; workload.aggregates as usize],
                duplicates: 0,
                order_violations: 0,
                latency: Latency::default(),
                last_ns: 0,
            }),
            delivered: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            complete: Notify::new(),
        }
    }

    /// Records a handled payload at `now_ns` ([`clock`]).
    pub fn handle(&self, payload: &[u8], now_ns: u64) {
        let Some(s) = Stamp::decode(payload).filter(|s| s.phase == self.phase) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(n), true) = (
            st.deliveries.get(s.index as usize).copied(),
            (s.aggregate as usize) < st.last_seq.len(),
        ) else {
            drop(st);
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        st.deliveries[s.index as usize] = n.saturating_add(1);
        if n > 0 {
            st.duplicates += 1;
            return;
        }
        let last = st.last_seq[s.aggregate as usize];
        if s.seq != last + 1 {
            st.order_violations += 1;
        }
        st.last_seq[s.aggregate as usize] = last.max(s.seq);
        st.latency
            .record(Duration::from_nanos(now_ns.saturating_sub(s.sent_ns)));
        st.last_ns = st.last_ns.max(now_ns);
        drop(st);
        if self.delivered.fetch_add(1, Ordering::AcqRel) + 1 == self.expected {
            self.complete.notify_one();
        }
    }

    /// Distinct messages handled so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Payloads that did not belong to this phase (0 in a correct run).
    pub fn foreign(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    /// Whether every expected message was handled.
    pub fn is_complete(&self) -> bool {
        self.delivered() >= self.expected
    }

    /// Waits until every expected message was handled (`true`), or until nothing new arrived
    /// for `stall` (`false`). `progress` is called with the count every `tick`.
    pub async fn wait(
        &self,
        stall: Duration,
        tick: Duration,
        mut progress: impl FnMut(u64),
    ) -> bool {
        let mut last = self.delivered();
        let mut quiet = Duration::ZERO;
        loop {
            if self.is_complete() {
                progress(self.delivered());
                return true;
            }
            tokio::select! {
                _ = self.complete.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let now = self.delivered();
            progress(now);
            if now == last {
                quiet += tick;
                if quiet >= stall && !self.is_complete() {
                    return false;
                }
            } else {
                quiet = Duration::ZERO;
                last = now;
            }
        }
    }

    /// The figures so far.
    pub fn outcome(&self) -> PhaseOutcome {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        PhaseOutcome {
            delivered: self.delivered(),
            duplicates: st.duplicates,
            order_violations: st.order_violations,
            latency: st.latency.clone(),
            last_ns: st.last_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Stamp;

    fn workload() -> Workload {
        Workload {
            messages: 4,
            aggregates: 2,
            topics: 1,
            publishers: 1,
            payload_bytes: 64,
        }
    }

    fn payload(w: &Workload, index: u64, sent_ns: u64) -> bytes::Bytes {
        let it = w.item(index);
        Stamp {
            phase: 1,
            index,
            aggregate: it.aggregate,
            seq: it.seq,
            sent_ns,
        }
        .encode(w.payload_bytes)
    }

    #[tokio::test]
    async fn completes_when_every_message_is_handled() {
        let w = workload();
        let t = Tracker::new(1, &w);
        for i in 0..4 {
            t.handle(&payload(&w, i, 1_000), 1_000 + 2_000_000);
        }
        assert!(t.is_complete());
        let done = t
            .wait(Duration::from_millis(50), Duration::from_millis(10), |_| {})
            .await;
        assert!(done);
        let o = t.outcome();
        assert_eq!((o.delivered, o.duplicates, o.order_violations), (4, 0, 0));
        assert_eq!(o.latency.count(), 4);
        assert!((o.latency.quantile_ms(0.5) - 2.0).abs() < 0.01);
    }

    #[tokio::test]
    async fn a_stall_ends_the_wait_without_completion() {
        let w = workload();
        let t = Tracker::new(1, &w);
        t.handle(&payload(&w, 0, 0), 10);
        let done = t
            .wait(Duration::from_millis(30), Duration::from_millis(10), |_| {})
            .await;
        assert!(!done);
        assert_eq!(t.outcome().delivered, 1);
    }

    #[test]
    fn duplicates_and_reorders_are_counted() {
        let w = workload();
        let t = Tracker::new(1, &w);
        // Aggregate 0 has indexes 0 (seq 1) and 2 (seq 2); aggregate 1 has 1 and 3.
        t.handle(&payload(&w, 2, 0), 1); // seq 2 before seq 1: a violation
        t.handle(&payload(&w, 0, 0), 1); // seq 1 after seq 2: another
        t.handle(&payload(&w, 1, 0), 1);
        t.handle(&payload(&w, 1, 0), 1); // a duplicate
        t.handle(&payload(&w, 3, 0), 1);
        t.handle(b"somebody else's message, long enough.....", 1);
        let o = t.outcome();
        assert_eq!((o.delivered, o.duplicates, o.order_violations), (4, 1, 2));
        assert_eq!(t.foreign(), 1);
    }

    #[test]
    fn histograms_merge() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for ms in 1..=50 {
            a.record(Duration::from_millis(ms));
        }
        for ms in 51..=100 {
            b.record(Duration::from_millis(ms));
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert!((a.quantile_ms(0.99) - 99.0).abs() < 0.1);
        assert!((a.max_ms() - 100.0).abs() < 0.1);
        assert_eq!(Latency::default().quantile_ms(0.5), 0.0);
    }
}
