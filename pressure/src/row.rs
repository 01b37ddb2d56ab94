//! The JSON the run writes (`target/pressure/<timestamp>.json`): one [`Row`] per backend,
//! level and variant, and the checks a row must pass. CI reads the file's rows; the program
//! itself refuses a row that is malformed or says something failed, so a run that lost,
//! reordered or leaked anything exits non-zero.

use serde::{Deserialize, Serialize};

/// The version of the file's layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;

/// Which side of the comparison a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The event bus (envelopes, keyed workers, acknowledgements).
    Bus,
    /// The broker's client used directly, with the same delivery semantics.
    Raw,
}

impl Variant {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bus => "bus",
            Variant::Raw => "raw",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Variant::Raw, Variant::Bus]
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| format!("`{s}` is not a variant: use raw or bus"))
    }
}

/// One run's figures. Latency fields are milliseconds; `p50_ms`..`max_ms` are measured at the
/// paced rate (`paced_rate`, a steady load below capacity), `full_*` with every publisher at
/// full speed (mostly queueing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `memory`, `kafka` or `nats`.
    pub backend: String,
    /// `low`, `medium`, `high`, `extreme`, `huge`, or `custom` (overridden counts).
    pub level: String,
    /// `bus` or `raw`.
    pub variant: Variant,
    /// Messages published at full speed.
    pub messages: u64,
    /// Aggregates (ordering keys).
    pub aggregates: u64,
    /// Topics.
    pub topics: u64,
    /// Concurrent publishers.
    pub publishers: u64,
    /// Publishes each publisher keeps in flight (1: each waits for its acknowledgement).
    #[serde(default = "one")]
    pub in_flight: u64,
    /// Memory only (`--raw-envelopes`): the raw side's channels carried the envelope the bus's
    /// side makes per message instead of bytes, so the ratios leave the envelope's cost out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_envelopes: bool,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Messages per second, first publish to last message handled, at full speed.
    pub throughput: f64,
    /// Publish-to-handled latency at the paced rate.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p95_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
    /// Messages per second of the paced phase.
    pub paced_rate: f64,
    /// Messages of the paced phase.
    pub paced_messages: u64,
    /// Publish-to-handled latency at full speed.
    pub full_p50_ms: f64,
    /// See `full_p50_ms`.
    pub full_p99_ms: f64,
    /// See `full_p50_ms`.
    pub full_max_ms: f64,
    /// How long one publish call took (until the broker acknowledged), at full speed.
    pub publish_p50_ms: f64,
    /// See `publish_p50_ms`.
    pub publish_p99_ms: f64,
    /// Distinct messages handled, both phases.
    pub delivered: u64,
    /// Messages never handled, both phases.
    pub lost: u64,
    /// Extra deliveries of a message already handled (at least once allows them).
    pub duplicates: u64,
    /// First deliveries out of their aggregate's publish order.
    pub order_violations: u64,
    /// Publish calls that returned an error.
    pub publish_errors: u64,
    /// Unknown survivors of the run's leak check after close.
    pub unknown_survivors: u64,
    /// How long `close()` took (for raw: stopping the consumers and dropping the clients).
    pub close_ms: f64,
    /// Peak resident set size during the run (VmHWM, reset at the run's start), MiB.
    pub rss_peak_mb: f64,
    /// CPU time of the whole process during the run (user + system), seconds.
    pub cpu_s: f64,
    /// CPU time of the whole process during the full-speed phase (from its first publish until
    /// its last message is handled; the leak check's checkpoint in between left out) per
    /// message handled in it, microseconds. The rest of the run (connecting, a consumer
    /// group's join, the paced phase's idle waits, close, the leak check) is in `cpu_s`, not
    /// here: it does not grow with the messages.
    pub cpu_us_per_msg: f64,
    /// Runs this row stands for (`--repeat`): its timing figures are their medians, its counts
    /// and peak RSS their worst.
    #[serde(default = "one")]
    pub repeats: u64,
    /// Bus rows: throughput over the raw row's of the same backend and level.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub throughput_ratio: Option<f64>,
    /// Bus rows: `p99_ms` over the raw row's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p99_ratio: Option<f64>,
}

fn one() -> u64 {
    1
}

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunFile {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// CPUs the process could use.
    pub cpus: usize,
    /// One row per backend, level and variant.
    pub rows: Vec<Row>,
}

/// One row for several runs of the same backend, level and variant: the median of each timing
/// figure (throughput, latencies, close, CPU), the worst of each count (lost, duplicates, order
/// violations, publish errors, unknown survivors) and of the peak RSS. A median of each
/// percentile keeps them in order. `None` for no runs.
pub fn merge(runs: &[Row]) -> Option<Row> {
    let first = runs.first()?;
    let median = |f: fn(&Row) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let worst = |f: fn(&Row) -> u64| runs.iter().map(f).max().unwrap_or(0);
    let lost = worst(|r| r.lost);
    Some(Row {
        throughput: median(|r| r.throughput),
        p50_ms: median(|r| r.p50_ms),
        p95_ms: median(|r| r.p95_ms),
        p99_ms: median(|r| r.p99_ms),
        max_ms: median(|r| r.max_ms),
        full_p50_ms: median(|r| r.full_p50_ms),
        full_p99_ms: median(|r| r.full_p99_ms),
        full_max_ms: median(|r| r.full_max_ms),
        publish_p50_ms: median(|r| r.publish_p50_ms),
        publish_p99_ms: median(|r| r.publish_p99_ms),
        delivered: (first.messages + first.paced_messages).saturating_sub(lost),
        lost,
        duplicates: worst(|r| r.duplicates),
        order_violations: worst(|r| r.order_violations),
        publish_errors: worst(|r| r.publish_errors),
        unknown_survivors: worst(|r| r.unknown_survivors),
        close_ms: median(|r| r.close_ms),
        rss_peak_mb: runs.iter().map(|r| r.rss_peak_mb).fold(0.0, f64::max),
        cpu_s: median(|r| r.cpu_s),
        cpu_us_per_msg: median(|r| r.cpu_us_per_msg),
        repeats: runs.iter().map(|r| r.repeats).sum(),
        throughput_ratio: None,
        p99_ratio: None,
        ..first.clone()
    })
}

/// Sets each bus row's ratios against the raw row of its backend and level.
pub fn fill_ratios(rows: &mut [Row]) {
    let raws: Vec<Row> = rows
        .iter()
        .filter(|r| r.variant == Variant::Raw)
        .cloned()
        .collect();
    for bus in rows.iter_mut().filter(|r| r.variant == Variant::Bus) {
        if let Some(raw) = raws
            .iter()
            .find(|r| r.backend == bus.backend && r.level == bus.level)
        {
            bus.throughput_ratio = ratio(bus.throughput, raw.throughput);
            bus.p99_ratio = ratio(bus.p99_ms, raw.p99_ms);
        }
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// What is wrong with a row: malformed figures, or a failure it records. Empty when the row
/// is good. Duplicates are not a failure (at least once allows them) and not listed.
pub fn problems(row: &Row) -> Vec<String> {
    let mut p = Vec::new();
    if !["memory", "kafka", "nats"].contains(&row.backend.as_str()) {
        p.push(format!("unknown backend `{}`", row.backend));
    }
    if row.messages == 0 {
        p.push("no messages".into());
    }
    let figures = [
        ("throughput", row.throughput),
        ("p50_ms", row.p50_ms),
        ("p95_ms", row.p95_ms),
        ("p99_ms", row.p99_ms),
        ("max_ms", row.max_ms),
        ("full_p50_ms", row.full_p50_ms),
        ("full_p99_ms", row.full_p99_ms),
        ("publish_p50_ms", row.publish_p50_ms),
        ("publish_p99_ms", row.publish_p99_ms),
        ("close_ms", row.close_ms),
        ("rss_peak_mb", row.rss_peak_mb),
        ("cpu_s", row.cpu_s),
        ("cpu_us_per_msg", row.cpu_us_per_msg),
    ];
    for (name, v) in figures {
        if !v.is_finite() || v < 0.0 {
            p.push(format!("{name} is {v}"));
        }
    }
    if row.throughput <= 0.0 {
        p.push("throughput is not positive".into());
    }
    if !(row.p50_ms <= row.p95_ms && row.p95_ms <= row.p99_ms && row.p99_ms <= row.max_ms) {
        p.push(format!(
            "percentiles out of order: p50 {} p95 {} p99 {} max {}",
            row.p50_ms, row.p95_ms, row.p99_ms, row.max_ms
        ));
    }
    if row.delivered + row.lost != row.messages + row.paced_messages {
        p.push(format!(
            "delivered {} + lost {} is not the {} messages published",
            row.delivered,
            row.lost,
            row.messages + row.paced_messages
        ));
    }
    for (name, n) in [
        ("lost", row.lost),
        ("order_violations", row.order_violations),
        ("publish_errors", row.publish_errors),
        ("unknown_survivors", row.unknown_survivors),
    ] {
        if n > 0 {
            p.push(format!("{name}: {n}"));
        }
    }
    match row.variant {
        // Absent when no raw row was measured beside it (`--variant bus`).
        Variant::Bus => {
            for (name, r) in [
                ("throughput_ratio", row.throughput_ratio),
                ("p99_ratio", row.p99_ratio),
            ] {
                if r.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                    p.push(format!("{name} is {r:?}"));
                }
            }
        }
        Variant::Raw => {
            if row.throughput_ratio.is_some() || row.p99_ratio.is_some() {
                p.push("a raw row carries ratios".into());
            }
        }
    }
    p
}

#[cfg(test)]
pub(crate) fn sample(variant: Variant) -> Row {
    Row {
        backend: "memory".into(),
        level: "low".into(),
        variant,
        messages: 500,
        aggregates: 50,
        topics: 5,
        publishers: 50,
        in_flight: 1,
        raw_envelopes: false,
        payload_bytes: 256,
        throughput: 1000.0,
        p50_ms: 1.0,
        p95_ms: 2.0,
        p99_ms: 3.0,
        max_ms: 4.0,
        paced_rate: 2000.0,
        paced_messages: 100,
        full_p50_ms: 1.0,
        full_p99_ms: 2.0,
        full_max_ms: 3.0,
        publish_p50_ms: 0.1,
        publish_p99_ms: 0.2,
        delivered: 600,
        lost: 0,
        duplicates: 0,
        order_violations: 0,
        publish_errors: 0,
        unknown_survivors: 0,
        close_ms: 1.0,
        rss_peak_mb: 10.0,
        cpu_s: 0.1,
        cpu_us_per_msg: 166.0,
        repeats: 1,
        throughput_ratio: None,
        p99_ratio: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Vec<Row> {
        let mut bus = sample(Variant::Bus);
        bus.throughput = 500.0;
        bus.p99_ms = 6.0;
        bus.max_ms = 7.0;
        vec![sample(Variant::Raw), bus]
    }

    #[test]
    fn ratios_go_on_bus_rows_only() {
        let mut rows = pair();
        fill_ratios(&mut rows);
        assert_eq!(rows[0].throughput_ratio, None);
        assert_eq!(rows[1].throughput_ratio, Some(0.5));
        assert_eq!(rows[1].p99_ratio, Some(2.0));
        assert!(rows.iter().all(|r| problems(r).is_empty()), "{rows:?}");
    }

    #[test]
    fn a_variant_is_read_by_its_name() {
        assert_eq!("raw".parse::<Variant>(), Ok(Variant::Raw));
        assert_eq!("bus".parse::<Variant>(), Ok(Variant::Bus));
        let e = "both".parse::<Variant>().unwrap_err();
        assert!(e.contains("`both`") && e.contains("raw or bus"), "{e}");
    }

    #[test]
    fn the_schema_has_the_fields_the_issue_names() {
        let mut rows = pair();
        fill_ratios(&mut rows);
        let v = serde_json::to_value(&rows[1]).unwrap();
        for key in [
            "backend",
            "level",
            "variant",
            "messages",
            "throughput",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "lost",
            "duplicates",
            "order_violations",
            "unknown_survivors",
            "close_ms",
            "rss_peak_mb",
            "throughput_ratio",
            "p99_ratio",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["variant"], "bus");
        let raw = serde_json::to_value(&rows[0]).unwrap();
        assert!(raw.get("throughput_ratio").is_none());
        let back: Row = serde_json::from_value(v).unwrap();
        assert_eq!(back, rows[1]);
    }

    #[test]
    fn raw_envelopes_appear_only_when_set() {
        let mut row = sample(Variant::Raw);
        let v = serde_json::to_value(&row).unwrap();
        assert!(v.get("raw_envelopes").is_none(), "{v}");
        // Files written before the field read as bytes.
        assert!(!serde_json::from_value::<Row>(v).unwrap().raw_envelopes);
        row.raw_envelopes = true;
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["raw_envelopes"], true);
        assert_eq!(serde_json::from_value::<Row>(v).unwrap(), row);
    }

    #[test]
    fn repeated_runs_merge_to_medians_and_worst_counts() {
        let run = |throughput: f64, p99: f64, lost: u64, rss: f64| {
            let mut r = sample(Variant::Bus);
            r.throughput = throughput;
            r.p99_ms = p99;
            r.max_ms = p99 + 1.0;
            r.lost = lost;
            r.delivered -= lost;
            r.rss_peak_mb = rss;
            r
        };
        let runs = [
            run(900.0, 3.5, 0, 12.0),
            run(1200.0, 2.5, 2, 10.0),
            run(1000.0, 9.0, 0, 11.0),
        ];
        let m = merge(&runs).unwrap();
        assert_eq!(m.throughput, 1000.0);
        assert_eq!(m.p99_ms, 3.5);
        assert_eq!(m.max_ms, 4.5);
        assert_eq!(m.p50_ms, 1.0);
        // A loss in any run is the row's.
        assert_eq!((m.lost, m.delivered), (2, 598));
        assert_eq!(m.rss_peak_mb, 12.0);
        assert_eq!(m.repeats, 3);
        assert!(problems(&m).iter().any(|p| p.starts_with("lost")));
        // An even count takes the mean of the middle two.
        assert_eq!(merge(&runs[..2]).unwrap().throughput, 1050.0);
        assert_eq!(merge(&runs[..1]).unwrap(), runs[0]);
        assert!(merge(&[]).is_none());
    }

    #[test]
    fn failures_and_bad_figures_are_problems() {
        let mut rows = pair();
        fill_ratios(&mut rows);
        let mut r = rows[1].clone();
        r.lost = 2;
        r.delivered -= 2;
        r.unknown_survivors = 1;
        r.throughput = f64::NAN;
        let p = problems(&r);
        assert!(p.iter().any(|p| p.starts_with("lost")), "{p:?}");
        assert!(
            p.iter().any(|p| p.starts_with("unknown_survivors")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("throughput is NaN")),
            "{p:?}"
        );
        let mut r = rows[0].clone();
        r.delivered = 1;
        assert!(!problems(&r).is_empty());
        let mut r = rows[1].clone();
        r.p99_ratio = Some(f64::INFINITY);
        assert!(!problems(&r).is_empty());
        // A bus row measured alone (`--variant bus`) has no ratios.
        let mut r = rows[1].clone();
        (r.throughput_ratio, r.p99_ratio) = (None, None);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        let mut r = rows[0].clone();
        r.duplicates = 3;
        assert!(problems(&r).is_empty(), "duplicates are allowed");
    }
}
