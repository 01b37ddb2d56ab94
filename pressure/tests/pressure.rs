//! The main job end to end: the pressure program at its smallest level on each backend, bus and
//! raw, checked through the JSON it prints and writes (every count, no timing thresholds). Each
//! test is a leak check of its own: the program it starts, and the brokers that program starts,
//! must all be gone when it returns.

use std::path::PathBuf;
use std::process::Command;

use leakcheck::leak_test;
use pressure::row::{problems, RunFile, Variant, SCHEMA_VERSION};

/// Runs `pressure --quick --json-only --backend <backend> --in-flight <in_flight> <more>` and
/// returns what it wrote.
#[track_caller]
fn quick_run(backend: &str, in_flight: u64, more: &[&str]) -> RunFile {
    let dir = std::env::temp_dir().join(format!(
        "pressure-test-{backend}-{in_flight}-{}-{}",
        more.join(""),
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_pressure"))
        .args(["--quick", "--json-only", "--backend", backend])
        .args(["--in-flight", &in_flight.to_string()])
        .args(more)
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("start the pressure program");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pressure failed ({}):\n{stderr}",
        out.status
    );
    let printed: RunFile = serde_json::from_slice(&out.stdout).expect("stdout is the JSON file");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the output directory")
        .map(|e| e.unwrap().path())
        .collect();
    let json = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"));
    let written: RunFile =
        serde_json::from_slice(&std::fs::read(json.expect("a JSON file")).unwrap()).unwrap();
    let svg = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "svg"));
    assert!(std::fs::read_to_string(svg.expect("an SVG chart"))
        .unwrap()
        .starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        serde_json::to_value(&printed.rows).unwrap(),
        serde_json::to_value(&written.rows).unwrap()
    );
    printed
}

#[track_caller]
fn assert_rows(file: &RunFile, backend: &str, in_flight: u64) {
    assert_eq!(file.schema_version, SCHEMA_VERSION);
    let variants: Vec<Variant> = file.rows.iter().map(|r| r.variant).collect();
    assert_eq!(variants, [Variant::Raw, Variant::Bus]);
    for r in &file.rows {
        assert_eq!((r.backend.as_str(), r.level.as_str()), (backend, "low"));
        assert_eq!((r.messages, r.aggregates, r.topics), (500, 50, 5));
        assert_eq!(r.in_flight, in_flight);
        assert!(!r.raw_envelopes, "the raw side carries bytes unless asked");
        assert_eq!(r.delivered, r.messages + r.paced_messages);
        assert_eq!(
            (
                r.lost,
                r.order_violations,
                r.publish_errors,
                r.unknown_survivors
            ),
            (0, 0, 0, 0),
            "{r:?}"
        );
        assert!(problems(r).is_empty(), "{:?}", problems(r));
    }
    let bus = &file.rows[1];
    assert!(bus.throughput_ratio.is_some() && bus.p99_ratio.is_some());
    assert!(file.rows[0].throughput_ratio.is_none());
}

#[leak_test]
fn memory_smallest_level() {
    assert_rows(&quick_run("memory", 1, &[]), "memory", 1);
}

/// Publishers with many publishes in flight (`enqueue`): the same counts, nothing lost.
#[leak_test]
fn memory_smallest_level_pipelined() {
    assert_rows(&quick_run("memory", 64, &[]), "memory", 64);
}

#[cfg(feature = "kafka")]
#[leak_test]
fn kafka_smallest_level() {
    assert_rows(&quick_run("kafka", 1, &[]), "kafka", 1);
}

#[cfg(feature = "kafka")]
#[leak_test]
fn kafka_smallest_level_pipelined() {
    assert_rows(&quick_run("kafka", 64, &[]), "kafka", 64);
}

#[cfg(feature = "nats")]
#[leak_test]
fn nats_smallest_level() {
    assert_rows(&quick_run("nats", 1, &[]), "nats", 1);
}

#[cfg(feature = "nats")]
#[leak_test]
fn nats_smallest_level_pipelined() {
    assert_rows(&quick_run("nats", 64, &[]), "nats", 64);
}

/// One side alone (for profiling it): its row only, with no ratios, and that is no failure.
#[leak_test]
fn one_variant_alone_has_no_ratios() {
    let file = quick_run("memory", 1, &["--variant", "bus"]);
    assert_eq!(file.rows.len(), 1);
    let bus = &file.rows[0];
    assert_eq!(bus.variant, Variant::Bus);
    assert_eq!((bus.throughput_ratio, bus.p99_ratio), (None, None));
    assert_eq!(bus.delivered, bus.messages + bus.paced_messages);
    assert!(problems(bus).is_empty(), "{:?}", problems(bus));
}

/// Memory's raw side carrying envelopes: both rows say so, and the bus row still has its
/// ratios (against that raw row).
#[leak_test]
fn raw_envelopes_are_marked_on_the_rows() {
    let file = quick_run("memory", 1, &["--raw-envelopes"]);
    assert_eq!(file.rows.len(), 2);
    for row in &file.rows {
        assert!(row.raw_envelopes, "{row:?}");
        assert_eq!(row.delivered, row.messages + row.paced_messages);
        assert!(problems(row).is_empty(), "{:?}", problems(row));
    }
    let bus = file.rows.iter().find(|r| r.variant == Variant::Bus);
    assert!(bus.and_then(|b| b.throughput_ratio).is_some(), "{bus:?}");
}

/// Only memory's raw side is a channel that can carry envelopes: with another backend the
/// option is refused before anything runs.
#[leak_test]
fn raw_envelopes_are_refused_beside_a_broker() {
    let out = Command::new(env!("CARGO_BIN_EXE_pressure"))
        .args(["--quick", "--json-only", "--raw-envelopes"])
        .args(["--backend", "memory,nats"])
        .output()
        .expect("start the pressure program");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--backend memory alone"), "{stderr}");
}

/// A backend this build leaves out is an error that says how to build it.
#[cfg(not(feature = "kafka"))]
#[leak_test]
fn a_backend_left_out_says_how_to_build_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_pressure"))
        .args(["--quick", "--json-only", "--backend", "kafka"])
        .output()
        .expect("start the pressure program");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features kafka"), "{stderr}");
}
