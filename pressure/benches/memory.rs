//! Memory backend: publish-to-handled throughput and latency with keyed ordering, for 1 and 2
//! keyed workers, against a baseline measured in the same run: the same messages through a
//! plain tokio channel to the same number of workers (what the bus adds on top of moving bytes
//! between tasks). Prints a table and writes `target/bench/eventbus-memory.json`
//! (`[{name, value, unit}]`).
//!
//! `cargo bench -p pressure --bench memory`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventbus::{Envelope, EventBus, MemoryBroker};

/// Whether this is CI's smoke run (`BENCH_SMOKE=1`): few messages, no figure judged.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Messages published at full speed (throughput).
fn messages() -> u64 {
    if smoke() {
        2_000
    } else {
        100_000
    }
}
const AGGREGATES: u64 = 1_000;
/// The latency runs publish at this rate (well below the throughput), 20 messages a millisecond.
const PACED_RATE: u64 = 20_000;
/// Messages published at [`PACED_RATE`] (latency).
fn paced_messages() -> u64 {
    if smoke() {
        400
    } else {
        20_000
    }
}

struct Run {
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summarize(n: u64, start: Instant, end: Instant, mut lat: Vec<Duration>) -> Run {
    lat.sort();
    Run {
        throughput: n as f64 / (end - start).as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
    }
}

/// The bus: envelopes keyed by aggregate, handled by `workers` keyed workers. `paced`: publish
/// [`paced_messages`] at [`PACED_RATE`] (for latency) instead of [`messages`] at full speed
/// (for throughput).
async fn bus_run(workers: usize, paced: bool) -> Run {
    let total = if paced { paced_messages() } else { messages() };
    let broker = MemoryBroker::new();
    let bus = EventBus::builder()
        .keyed_workers(workers)
        .queue_capacity(1024)
        .memory(&broker);
    let base = Instant::now();
    let lat = Arc::new(Mutex::new(Vec::with_capacity(messages() as usize)));
    let done = Arc::new(AtomicU64::new(0));
    let last = Arc::new(Mutex::new(vec![0u64; AGGREGATES as usize]));
    let violations = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    {
        let (lat, done, last, violations, finished) = (
            lat.clone(),
            done.clone(),
            last.clone(),
            violations.clone(),
            finished.clone(),
        );
        bus.subscribe_envelopes("bench", "bench", move |e: Envelope| {
            let (sent_ns, seq) = decode(e.payload());
            let l = base.elapsed() - Duration::from_nanos(sent_ns);
            let agg: usize = e.aggregate_id()[1..].parse().unwrap();
            {
                let mut last = last.lock().unwrap();
                if seq != last[agg] + 1 {
                    violations.fetch_add(1, Ordering::Relaxed);
                }
                last[agg] = seq;
            }
            lat.lock().unwrap().push(l);
            if done.fetch_add(1, Ordering::Relaxed) + 1 == total {
                finished.notify_one();
            }
            async { Ok::<_, std::io::Error>(()) }
        })
        .await
        .unwrap();
    }
    let start = Instant::now();
    let per_tick = PACED_RATE / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..total {
        if paced && i % per_tick == 0 {
            tick.tick().await;
        }
        let agg = i % AGGREGATES;
        let seq = i / AGGREGATES + 1;
        let payload = encode(base.elapsed().as_nanos() as u64, seq);
        let e = Envelope::new(format!("a{agg}"), "Bench", 1, payload).unwrap();
        bus.publish_envelope("bench", &e).await.unwrap();
    }
    finished.notified().await;
    let end = Instant::now();
    bus.close().await.unwrap();
    assert_eq!(violations.load(Ordering::Relaxed), 0, "ordering violations");
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    summarize(total, start, end, lat)
}

/// The baseline: the same payloads through bounded tokio channels, one per worker, chosen by
/// aggregate, no broker, no envelope encoding.
async fn channel_run(workers: usize) -> Run {
    let base = Instant::now();
    let lat = Arc::new(Mutex::new(Vec::with_capacity(messages() as usize)));
    let mut txs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<u8>)>(1024);
        txs.push(tx);
        let lat = lat.clone();
        handles.push(tokio::spawn(async move {
            while let Some((_agg, payload)) = rx.recv().await {
                let (sent_ns, _) = decode(&payload);
                lat.lock()
                    .unwrap()
                    .push(base.elapsed() - Duration::from_nanos(sent_ns));
            }
        }));
    }
    let start = Instant::now();
    for i in 0..messages() {
        let agg = i % AGGREGATES;
        let payload = encode(base.elapsed().as_nanos() as u64, i / AGGREGATES + 1);
        txs[(agg as usize) % workers]
            .send((agg, payload))
            .await
            .unwrap();
    }
    drop(txs);
    for h in handles {
        h.await.unwrap();
    }
    let end = Instant::now();
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    summarize(messages(), start, end, lat)
}

fn encode(sent_ns: u64, seq: u64) -> Vec<u8> {
    format!("{sent_ns}:{seq}").into_bytes()
}

fn decode(b: &[u8]) -> (u64, u64) {
    let s = std::str::from_utf8(b).unwrap();
    let (a, b) = s.split_once(':').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for workers in [1usize, 2] {
        // One warm-up round each, then the measured one.
        rt.block_on(channel_run(workers));
        rt.block_on(bus_run(workers, false));
        let chan = rt.block_on(channel_run(workers));
        let flood = rt.block_on(bus_run(workers, false));
        let paced = rt.block_on(bus_run(workers, true));
        let bus = Run {
            throughput: flood.throughput,
            p50: paced.p50,
            p99: paced.p99,
        };
        rows.push((workers, bus.throughput, bus.p50, bus.p99, chan.throughput));
        let n = |m: &str| format!("memory/{workers}-worker/{m}");
        json.push(serde_json::json!({"name": n("throughput"), "value": bus.throughput.round(), "unit": "msg/s"}));
        json.push(serde_json::json!({"name": n("p50_latency"), "value": bus.p50.as_secs_f64() * 1e6, "unit": "us"}));
        json.push(serde_json::json!({"name": n("p99_latency"), "value": bus.p99.as_secs_f64() * 1e6, "unit": "us"}));
        json.push(serde_json::json!({"name": n("channel_baseline_throughput"), "value": chan.throughput.round(), "unit": "msg/s"}));
        json.push(serde_json::json!({"name": n("throughput_vs_channel"), "value": bus.throughput / chan.throughput, "unit": "x"}));
    }
    println!("memory backend, envelopes over {AGGREGATES} aggregates (keyed), 2 runtime threads");
    println!("throughput: {} published at full speed; latency (publish to handled): {} at {PACED_RATE} msg/s", messages(), paced_messages());
    println!(
        "{:<8} {:>14} {:>10} {:>10} {:>18} {:>8}",
        "workers", "msg/s", "p50", "p99", "channel msg/s", "ratio"
    );
    for (w, tp, p50, p99, ch) in rows {
        println!(
            "{w:<8} {tp:>14.0} {:>8.1}us {:>8.1}us {ch:>18.0} {:>7.3}x",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            tp / ch
        );
    }
    // A figure that is not a finite number is a broken benchmark.
    for figure in &json {
        let v = figure["value"].as_f64();
        assert!(v.is_some_and(f64::is_finite), "figure not finite: {figure}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("eventbus-memory.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {}", path.display());
}
