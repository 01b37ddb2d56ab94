//! `cargo run --release -p pressure`: the event bus against the raw clients of its brokers at
//! the four pressure levels, every run under a leak check; a table, a JSON file and an SVG
//! chart in `target/pressure/`. See the crate docs and `--help`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use comfy_table::{presets, Table};
use indicatif::{ProgressBar, ProgressStyle};

use pressure::row::{fill_ratios, merge, problems, Row, RunFile, Variant, SCHEMA_VERSION};
use pressure::run::{run, Spec};
use pressure::transport::{Backend, Endpoint, TransportError};
use pressure::workload::{aggregates_for, Level, Workload};

/// The event bus against the raw clients of its brokers, every run under a leak check.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Backends, comma-separated: memory, kafka, nats, or all. Kafka and NATS need the build
    /// features `kafka` and `nats`, and brokers: `scripts/brokers` installs them (the program
    /// starts its own), or `KAFKA_BOOTSTRAP_SERVERS` / `NATS_URL` name running ones.
    #[arg(long, default_value = "memory", value_delimiter = ',')]
    backend: Vec<String>,
    /// Levels, comma-separated: low (500 messages), medium (2 000), high (5 000), extreme
    /// (10 000), huge (100 000), or all (the first four).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    level: Vec<String>,
    /// CI's smoke run: the low level only.
    #[arg(long)]
    quick: bool,
    /// Messages at full speed (replaces the levels with one `custom` level).
    #[arg(long)]
    messages: Option<u64>,
    /// Aggregates (ordering keys); default messages / 10 clamped to 50..1000.
    #[arg(long)]
    aggregates: Option<u64>,
    /// Topics (default 5).
    #[arg(long)]
    topics: Option<u64>,
    /// Concurrent publishers (default 50).
    #[arg(long)]
    publishers: Option<u64>,
    /// Publishes each publisher keeps in flight (default 1: each waits for its
    /// acknowledgement). Above 1 the bus uses `enqueue`, the raw clients their own pipelined
    /// publish; every acknowledgement is still checked.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Messages per second of the paced (latency) phase.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Payload bytes per message (default 256; at least the 34-byte stamp).
    #[arg(long)]
    payload_bytes: Option<usize>,
    /// Messages of the paced phase (default a fifth of the messages, at least 100).
    #[arg(long)]
    paced_messages: Option<u64>,
    /// A phase fails when nothing new is handled for this many seconds (Tansu has been seen to
    /// answer nothing for up to 30 s, a consumer group's join included).
    #[arg(long, default_value_t = 90)]
    stall_secs: u64,
    /// Runs of each backend, level and variant, raw and bus taking turns: each row then holds
    /// the medians of its timing figures and the worst of its counts (see the README).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// Memory's raw side carries the envelope the bus's side makes per message (its id, time
    /// and checks, one allocation) instead of bytes: the ratios then show the bus's cost beyond
    /// making envelopes. Memory only: Kafka's and NATS's raw sides send bytes.
    #[arg(long)]
    raw_envelopes: bool,
    /// Only this side, `raw` or `bus` (default both, taking turns): for profiling one of
    /// them; its rows then have no ratios.
    #[arg(long)]
    variant: Option<Variant>,
    /// Print only the JSON (for CI); no progress bars, no table.
    #[arg(long)]
    json_only: bool,
    /// Where the JSON and the chart go (default `target/pressure` of the workspace).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match main_with(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pressure: failed to {e}");
            ExitCode::from(2)
        }
    }
}

fn main_with(args: &Args) -> Result<ExitCode, String> {
    let backends = backends(&args.backend)?;
    let levels = levels(args)?;
    if args.rate.is_nan() || args.rate <= 0.0 {
        return Err(format!("use a positive --rate, not {}", args.rate));
    }
    if args.raw_envelopes && backends.iter().any(|b| *b != Backend::Memory) {
        return Err(
            "use --raw-envelopes with --backend memory alone: Kafka's and NATS's raw sides send \
             bytes"
                .into(),
        );
    }
    for b in &backends {
        if !built(*b) {
            return Err(TransportError::NotBuilt { backend: b.name() }.to_string());
        }
    }
    // Brokers start before any check's baseline (so no check counts them), on this thread (a
    // broker dies with the thread that started it), and stop when the program ends.
    let outer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("build a runtime: {e}"))?;
    let mut brokers = Vec::new();
    let mut endpoints = Vec::new();
    for b in &backends {
        let address = match b {
            Backend::Memory => String::new(),
            Backend::Kafka | Backend::Nats => {
                let flavor = match b {
                    Backend::Kafka => brokers::Flavor::Kafka,
                    _ => brokers::Flavor::Nats,
                };
                let broker = outer
                    .block_on(brokers::Broker::launch(flavor))
                    .map_err(|e| e.to_string())?;
                let address = broker.address().to_string();
                brokers.push(broker);
                address
            }
        };
        endpoints.push(Endpoint {
            backend: *b,
            address,
        });
    }

    let started = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut shown = BTreeSet::new();
    for endpoint in &endpoints {
        for (level, workload) in &levels {
            let mut runs: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
            for repeat in 1..=args.repeat {
                for (i, variant) in [Variant::Raw, Variant::Bus].into_iter().enumerate() {
                    if args.variant.is_some_and(|v| v != variant) {
                        continue;
                    }
                    let spec = Spec {
                        endpoint: endpoint.clone(),
                        level: level.clone(),
                        workload: *workload,
                        variant,
                        paced_rate: args.rate,
                        paced_messages: args
                            .paced_messages
                            .unwrap_or((workload.messages / 5).max(100).min(workload.messages))
                            .max(1),
                        stall: Duration::from_secs(args.stall_secs.max(1)),
                        in_flight: args.in_flight.max(1),
                        raw_envelopes: args.raw_envelopes,
                    };
                    let mut label =
                        format!("{}/{} {}", endpoint.backend.name(), level, variant.name());
                    if args.repeat > 1 {
                        label.push_str(&format!(" #{repeat}"));
                    }
                    let bar = progress(args, &label, workload.messages + spec.paced_messages);
                    let outcome =
                        run(&spec, &bar).map_err(|e| format!("start a leak check: {e}"))?;
                    bar.finish_and_clear();
                    let clean = outcome.report.is_clean();
                    if !args.json_only {
                        eprintln!(
                            "{label:<25} {:>10.0} msg/s  p99 {:>8.2} ms  lost {}  leaks {}",
                            outcome.row.throughput,
                            outcome.row.p99_ms,
                            outcome.row.lost,
                            outcome.row.unknown_survivors
                        );
                        // The lifecycle table of the first bus run per backend: what the bus
                        // starts and what is gone after close.
                        if variant == Variant::Bus && shown.insert(endpoint.backend) && clean {
                            eprintln!("{}", outcome.report.to_text());
                        }
                    }
                    if !clean {
                        eprintln!("{}", outcome.report.to_text());
                    }
                    if let Some(e) = outcome.error {
                        eprintln!("{label}: {e}");
                        failures.push(format!("{label}: {e}"));
                    }
                    runs[i].push(outcome.row);
                }
            }
            rows.extend(runs.iter().filter_map(|r| merge(r)));
        }
    }
    drop(brokers);
    fill_ratios(&mut rows);
    for r in &rows {
        for p in problems(r) {
            failures.push(format!(
                "{}/{} {}: {p}",
                r.backend,
                r.level,
                r.variant.name()
            ));
        }
    }

    let file = RunFile {
        schema_version: SCHEMA_VERSION,
        started: started.clone(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the pressure crate is inside the workspace")
            .join("target")
            .join("pressure")
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let stem: String = started.chars().filter(|c| *c != '-' && *c != ':').collect();
    let json_path = dir.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(&file).expect("rows always serialize");
    std::fs::write(&json_path, &json).map_err(|e| format!("write {}: {e}", json_path.display()))?;
    let svg_path = dir.join(format!("{stem}.svg"));
    pressure::chart::draw(&file.rows, &svg_path).map_err(|e| e.to_string())?;

    if args.json_only {
        println!("{json}");
    } else {
        println!("{}", table(&file.rows));
        let publishers = file.rows.first().map_or(0, |r| r.publishers);
        let repeats = match args.repeat {
            1 => String::new(),
            n => format!("; medians of {n} runs (counts and RSS: the worst run)"),
        };
        let raw = match args.raw_envelopes {
            true => "; the raw side's channels carry envelopes",
            false => "",
        };
        println!(
            "{} CPUs; {publishers} publishers with {} publish(es) in flight each; latency at {} \
             msg/s (paced), throughput at full speed{repeats}{raw}",
            file.cpus,
            args.in_flight.max(1),
            args.rate
        );
        println!("wrote {} and {}", json_path.display(), svg_path.display());
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            eprintln!("pressure: {f}");
        }
        eprintln!(
            "pressure: {} problem(s); the JSON is in {}",
            failures.len(),
            json_path.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn built(b: Backend) -> bool {
    match b {
        Backend::Memory => true,
        Backend::Kafka => cfg!(feature = "kafka"),
        Backend::Nats => cfg!(feature = "nats"),
    }
}

fn backends(list: &[String]) -> Result<Vec<Backend>, String> {
    let mut out = BTreeSet::new();
    for b in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match b {
            "memory" => out.insert(Backend::Memory),
            "kafka" => out.insert(Backend::Kafka),
            "nats" => out.insert(Backend::Nats),
            "all" => {
                out.extend([Backend::Memory, Backend::Kafka, Backend::Nats]);
                true
            }
            other => {
                return Err(format!(
                "parse --backend: unknown backend `{other}`: expected memory, kafka, nats or all"
            ))
            }
        };
    }
    if out.is_empty() {
        return Err("parse --backend: it names no backend".into());
    }
    Ok(out.into_iter().collect())
}

fn levels(args: &Args) -> Result<Vec<(String, Workload)>, String> {
    let mut chosen: Vec<Level> = Vec::new();
    if args.quick {
        chosen.push(Level::Low);
    } else {
        for l in args
            .level
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let add: Vec<Level> = match l {
                "all" => Level::STANDARD.to_vec(),
                l => vec![l.parse().map_err(|e| format!("parse --level: {e}"))?],
            };
            for l in add {
                if !chosen.contains(&l) {
                    chosen.push(l);
                }
            }
        }
    }
    let mut out: Vec<(String, Workload)> = match args.messages {
        Some(n) => {
            let mut w = Workload::level(Level::Low).with_messages(n);
            w.aggregates = aggregates_for(n).min(n.max(1));
            vec![("custom".into(), w)]
        }
        None => chosen
            .into_iter()
            .map(|l| (l.name().to_string(), Workload::level(l)))
            .collect(),
    };
    if out.is_empty() {
        return Err("parse --level: it names no level".into());
    }
    for (_, w) in &mut out {
        if let Some(a) = args.aggregates {
            w.aggregates = a;
        }
        if let Some(t) = args.topics {
            w.topics = t;
        }
        if let Some(p) = args.publishers {
            w.publishers = p;
        }
        if let Some(b) = args.payload_bytes {
            w.payload_bytes = b;
        }
        *w = w.normalized();
    }
    Ok(out)
}

fn progress(args: &Args, label: &str, len: u64) -> ProgressBar {
    if args.json_only {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:<22} [{bar:30}] {pos:>6}/{len:6} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

fn table(rows: &[Row]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "backend",
        "level",
        "variant",
        "msgs",
        "msg/s",
        "x raw",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99 x raw",
        "lost",
        "dup",
        "order",
        "leaks",
        "close ms",
        "RSS MB",
        "CPU µs/msg",
    ]);
    let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.2}x"));
    for r in rows {
        t.add_row(vec![
            r.backend.clone(),
            r.level.clone(),
            r.variant.name().to_string(),
            r.messages.to_string(),
            format!("{:.0}", r.throughput),
            ratio(r.throughput_ratio),
            format!("{:.3}", r.p50_ms),
            format!("{:.3}", r.p95_ms),
            format!("{:.3}", r.p99_ms),
            ratio(r.p99_ratio),
            r.lost.to_string(),
            r.duplicates.to_string(),
            r.order_violations.to_string(),
            r.unknown_survivors.to_string(),
            format!("{:.1}", r.close_ms),
            format!("{:.0}", r.rss_peak_mb),
            format!("{:.1}", r.cpu_us_per_msg),
        ]);
    }
    t
}
