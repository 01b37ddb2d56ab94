//! One run (a backend, a level, a variant) under its own leak check: connect, subscribe,
//! warm up, publish at full speed, drain, publish at a paced rate, drain, close; then the check
//! settles and reports. Every figure is taken from what happened: throughput is the time from
//! the first publish to the last message handled, latency comes from each message's stamp.
//!
//! The warm-up (one message per topic, waited for) is there so that neither side is timed
//! while its consumers still join their groups (about a second on Tansu).
//!
//! Brokers are started before the check's baseline, so the check's child processes are the
//! run's own (none); the clients' threads, sockets and tasks are all inside it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventbus::Envelope;
use indicatif::ProgressBar;
use leakcheck::{Check, Report};

use crate::row::{Row, Variant};
use crate::tracker::{clock, Latency, PhaseOutcome, Tracker};
use crate::transport::{
    Backend, Bus, Endpoint, Names, Phases, RawMemory, Transport, TransportError, PUBLISH_TIMEOUT,
};
use crate::workload::{Stamp, Workload};

/// The phases, by the phase byte of a stamp.
const WARMUP: u8 = 0;
const FULL: u8 = 1;
const PACED: u8 = 2;

/// What a run needs besides its backend.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Where.
    pub endpoint: Endpoint,
    /// The level's name.
    pub level: String,
    /// The full-speed workload.
    pub workload: Workload,
    /// Bus or raw.
    pub variant: Variant,
    /// Messages per second of the paced phase.
    pub paced_rate: f64,
    /// Messages of the paced phase.
    pub paced_messages: u64,
    /// A phase fails when nothing new is handled for this long.
    pub stall: Duration,
    /// Publishes each publisher keeps in flight (1: each waits for its acknowledgement).
    pub in_flight: usize,
    /// Memory's raw side carries the envelope the bus's side makes per message, not bytes.
    pub raw_envelopes: bool,
}

/// A run's outcome: its row, its leak report, and what went wrong if anything did.
pub struct Outcome {
    /// The figures.
    pub row: Row,
    /// The leak check's report.
    pub report: Report,
    /// An error that ended the run early (the row then shows what was lost).
    pub error: Option<String>,
}

/// Runs `spec` under a leak check, showing progress on `bar`.
pub fn run(spec: &Spec, bar: &ProgressBar) -> Result<Outcome, leakcheck::Error> {
    reset_peak_rss();
    let cpu_start = cpu_seconds();
    let check = Check::builder()
        .label(format!(
            "pressure {}/{} {}",
            spec.endpoint.backend.name(),
            spec.level,
            spec.variant.name()
        ))
        .start_multi_thread(2)?;
    let names = Names::new(&run_id(spec), spec.workload.topics);
    let mut figures = Figures::default();
    let error = match (spec.variant, spec.endpoint.backend) {
        (Variant::Bus, _) => {
            let t = check.block_on(Bus::connect(&spec.endpoint, &names));
            drive(&check, t, spec, &names, bar, &mut figures)
        }
        (Variant::Raw, Backend::Memory) if spec.raw_envelopes => {
            let t = RawMemory::<Envelope>::new(spec.workload.topics as usize);
            drive(&check, Ok(t), spec, &names, bar, &mut figures)
        }
        (Variant::Raw, Backend::Memory) => {
            let t = RawMemory::<Bytes>::new(spec.workload.topics as usize);
            drive(&check, Ok(t), spec, &names, bar, &mut figures)
        }
        #[cfg(feature = "kafka")]
        (Variant::Raw, Backend::Kafka) => {
            let t = check.block_on(crate::raw_kafka::RawKafka::connect(&spec.endpoint, &names));
            drive(&check, t, spec, &names, bar, &mut figures)
        }
        #[cfg(feature = "nats")]
        (Variant::Raw, Backend::Nats) => {
            let t = check.block_on(crate::raw_nats::RawNats::connect(&spec.endpoint, &names));
            drive(&check, t, spec, &names, bar, &mut figures)
        }
        #[allow(unreachable_patterns)]
        (_, other) => Err(TransportError::NotBuilt {
            backend: other.name(),
        }),
    }
    .err()
    .map(|e| format!("failed to {e}"));
    let report = check.finish();
    let cpu_s = cpu_seconds() - cpu_start;
    let row = figures.row(spec, cpu_s, report.unknown().count() as u64);
    Ok(Outcome { row, report, error })
}

/// A unique id per run (process and counter), for topic and group names.
fn run_id(spec: &Spec) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}-{}",
        spec.level,
        spec.variant.name(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a run measured so far; missing phases count as lost.
#[derive(Default)]
struct Figures {
    full: Option<PhaseOutcome>,
    full_start_ns: u64,
    paced: Option<PhaseOutcome>,
    publish: Latency,
    publish_errors: u64,
    close_ms: f64,
    /// CPU time of the full-speed phase, its checkpoint left out.
    full_cpu_s: f64,
}

impl Figures {
    fn row(&self, spec: &Spec, cpu_s: f64, unknown: u64) -> Row {
        let w = &spec.workload;
        let empty = PhaseOutcome::default();
        let full = self.full.as_ref().unwrap_or(&empty);
        let paced = self.paced.as_ref().unwrap_or(&empty);
        let elapsed_s = full.last_ns.saturating_sub(self.full_start_ns) as f64 / 1e9;
        let throughput = match full.delivered == w.messages && elapsed_s > 0.0 {
            true => w.messages as f64 / elapsed_s,
            false => 0.0,
        };
        let delivered = full.delivered + paced.delivered;
        Row {
            backend: spec.endpoint.backend.name().into(),
            level: spec.level.clone(),
            variant: spec.variant,
            messages: w.messages,
            aggregates: w.aggregates,
            topics: w.topics,
            publishers: w.publishers,
            in_flight: spec.in_flight as u64,
            raw_envelopes: spec.raw_envelopes,
            payload_bytes: w.payload_bytes,
            throughput,
            p50_ms: paced.latency.quantile_ms(0.50),
            p95_ms: paced.latency.quantile_ms(0.95),
            p99_ms: paced.latency.quantile_ms(0.99),
            max_ms: paced.latency.max_ms(),
            paced_rate: spec.paced_rate,
            paced_messages: spec.paced_messages,
            full_p50_ms: full.latency.quantile_ms(0.50),
            full_p99_ms: full.latency.quantile_ms(0.99),
            full_max_ms: full.latency.max_ms(),
            publish_p50_ms: self.publish.quantile_ms(0.50),
            publish_p99_ms: self.publish.quantile_ms(0.99),
            delivered,
            lost: (w.messages + spec.paced_messages).saturating_sub(delivered),
            duplicates: full.duplicates + paced.duplicates,
            order_violations: full.order_violations + paced.order_violations,
            publish_errors: self.publish_errors,
            unknown_survivors: unknown,
            close_ms: self.close_ms,
            rss_peak_mb: peak_rss_mb(),
            cpu_s,
            cpu_us_per_msg: match full.delivered {
                0 => 0.0,
                n => self.full_cpu_s * 1e6 / n as f64,
            },
            repeats: 1,
            throughput_ratio: None,
            p99_ratio: None,
        }
    }
}

/// The run's steps on a connected transport, each followed by its checkpoint. The transport
/// is closed (and dropped) on every path that connected it.
fn drive<T: Transport>(
    check: &Check,
    transport: Result<T, TransportError>,
    spec: &Spec,
    names: &Names,
    bar: &ProgressBar,
    figures: &mut Figures,
) -> Result<(), TransportError> {
    let transport = Arc::new(transport?);
    check.checkpoint("connected");
    let result = measure(check, &transport, spec, names, bar, figures);
    let start = Instant::now();
    let closed = check.block_on(transport.close());
    figures.close_ms = start.elapsed().as_secs_f64() * 1e3;
    drop(transport);
    check.checkpoint("closed");
    result.and(closed)
}

fn measure<T: Transport>(
    check: &Check,
    transport: &Arc<T>,
    spec: &Spec,
    names: &Names,
    bar: &ProgressBar,
    figures: &mut Figures,
) -> Result<(), TransportError> {
    let w = spec.workload;
    let warmup = Workload {
        messages: w.topics,
        aggregates: w.topics,
        topics: w.topics,
        publishers: 1,
        payload_bytes: w.payload_bytes,
    };
    let paced = Workload {
        messages: spec.paced_messages,
        ..w
    }
    .normalized();
    let trackers: Vec<Arc<Tracker>> = [(WARMUP, warmup), (FULL, w), (PACED, paced)]
        .iter()
        .map(|(phase, w)| Arc::new(Tracker::new(*phase, w)))
        .collect();
    let phases = Arc::new(Phases::new(trackers.clone()));
    let tick = Duration::from_millis(100);
    check.block_on(async {
        transport.subscribe(names, phases).await?;
        bar.set_message("warming up");
        let p = publish(transport, warmup, WARMUP, None, 1).await;
        p.error.map_or(Ok(()), Err)?;
        match trackers[0].wait(spec.stall, tick, |_| {}).await {
            true => Ok(()),
            false => Err(stalled(names, "the warm-up")),
        }
    })?;
    check.checkpoint("subscribed");

    bar.set_message("full speed");
    let cpu_start = cpu_seconds();
    let full = check.block_on(publish(transport, w, FULL, None, spec.in_flight));
    figures.full_start_ns = full.start_ns;
    figures.publish = full.calls;
    figures.publish_errors += full.errors;
    let checkpoint_start = cpu_seconds();
    check.checkpoint("published");
    let checkpoint_cpu = cpu_seconds() - checkpoint_start;
    let complete = check.block_on(trackers[1].wait(spec.stall, tick, |n| bar.set_position(n)));
    figures.full_cpu_s = (cpu_seconds() - cpu_start - checkpoint_cpu).max(0.0);
    figures.full = Some(trackers[1].outcome());
    check.checkpoint("drained");
    full.error.map_or(Ok(()), Err)?;
    if !complete {
        return Err(stalled(names, "the full-speed phase"));
    }

    bar.set_message(format!("paced at {} msg/s", spec.paced_rate));
    let p = check.block_on(publish(
        transport,
        paced,
        PACED,
        Some(spec.paced_rate),
        spec.in_flight,
    ));
    figures.publish_errors += p.errors;
    let complete =
        check.block_on(trackers[2].wait(spec.stall, tick, |n| bar.set_position(w.messages + n)));
    figures.paced = Some(trackers[2].outcome());
    p.error.map_or(Ok(()), Err)?;
    if !complete {
        return Err(stalled(names, "the paced phase"));
    }
    Ok(())
}

fn stalled(names: &Names, what: &str) -> TransportError {
    TransportError::Subscribe {
        topic: names.topics.join(","),
        message: format!("{what} stalled: nothing new was handled within the stall timeout"),
    }
}

/// What the publishers of one phase did.
struct Published {
    start_ns: u64,
    calls: Latency,
    errors: u64,
    error: Option<TransportError>,
}

/// Publishes `w` with its publishers in parallel, each message stamped right before its
/// publish call; `rate` paces every message to its slot (`index / rate` after the start).
/// With `in_flight` above 1 each publisher enqueues and waits for its oldest acknowledgement
/// only once `in_flight` are pending; a call's latency is then enqueue to acknowledgement.
async fn publish<T: Transport>(
    transport: &Arc<T>,
    w: Workload,
    phase: u8,
    rate: Option<f64>,
    in_flight: usize,
) -> Published {
    let start_ns = clock();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..w.publishers {
        let t = transport.clone();
        tasks.spawn(async move {
            let mut calls = Calls::default();
            let mut pending = VecDeque::new();
            for it in w.items_of(p) {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(
                        start + Duration::from_secs_f64(it.index as f64 / rate),
                    )
                    .await;
                }
                let sent_ns = clock();
                let payload = Stamp {
                    phase,
                    index: it.index,
                    aggregate: it.aggregate,
                    seq: it.seq,
                    sent_ns,
                }
                .encode(w.payload_bytes);
                let (topic, key) = (it.topic as usize, it.aggregate_id());
                if in_flight <= 1 {
                    let r = within_timeout(topic, t.publish(topic, key, payload)).await;
                    calls.record(sent_ns, r);
                    continue;
                }
                match within_timeout(topic, t.enqueue(topic, key, payload)).await {
                    Ok(ack) => pending.push_back((sent_ns, topic, ack)),
                    Err(e) => calls.record(sent_ns, Err(e)),
                }
                if pending.len() >= in_flight {
                    let (sent_ns, topic, ack) = pending.pop_front().expect("one is pending");
                    calls.record(sent_ns, within_timeout(topic, ack).await);
                }
            }
            for (sent_ns, topic, ack) in pending {
                calls.record(sent_ns, within_timeout(topic, ack).await);
            }
            calls
        });
    }
    let mut out = Published {
        start_ns,
        calls: Latency::default(),
        errors: 0,
        error: None,
    };
    while let Some(r) = tasks.join_next().await {
        let calls = r.expect("a publisher never panics");
        out.calls.merge(&calls.latency);
        out.errors += calls.errors;
        if out.error.is_none() {
            out.error = calls.first_error;
        }
    }
    out
}

/// One publisher's calls: how long each took, and what failed.
#[derive(Default)]
struct Calls {
    latency: Latency,
    errors: u64,
    first_error: Option<TransportError>,
}

impl Calls {
    fn record(&mut self, sent_ns: u64, result: Result<(), TransportError>) {
        self.latency
            .record(Duration::from_nanos(clock().saturating_sub(sent_ns)));
        if let Err(e) = result {
            self.errors += 1;
            self.first_error.get_or_insert(e);
        }
    }
}

/// `call`, failed if it has no answer within twice the publish timeout.
async fn within_timeout<R>(
    topic: usize,
    call: impl std::future::Future<Output = Result<R, TransportError>>,
) -> Result<R, TransportError> {
    match tokio::time::timeout(PUBLISH_TIMEOUT * 2, call).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Publish {
            topic: format!("topic {topic}"),
            message: format!("no answer within {:?}", PUBLISH_TIMEOUT * 2),
        }),
    }
}

/// CPU time of the process (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Resets the peak resident set size (`VmHWM`), so that each run reports its own peak
/// (Linux: writing 5 to `/proc/self/clear_refs`). Where that fails, the peak is the process's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size since [`reset_peak_rss`], MiB (`VmHWM`, or `getrusage`'s
/// `ru_maxrss` where `/proc` has none).
fn peak_rss_mb() -> f64 {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
    let kib = from_proc.unwrap_or_else(|| {
        // SAFETY: as in cpu_seconds.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        u.ru_maxrss as f64
    });
    kib / 1024.0
}
