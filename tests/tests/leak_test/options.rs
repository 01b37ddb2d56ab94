//! Each option of `#[leak_test]` and what it changes, observed from inside the test or through
//! the report it produced.

use std::time::Duration;

use leakcheck::{checkpoint, leak_test, Kind, Status};

#[leak_test]
async fn the_default_runtime_is_current_thread() {
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread
    );
}

#[leak_test(flavor = "multi_thread", worker_threads = 3)]
async fn multi_thread_with_workers() {
    let m = tokio::runtime::Handle::current().metrics();
    assert_eq!(m.num_workers(), 3);
}

#[leak_test(start_paused = true)]
async fn paused_time_auto_advances() {
    let t = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(t.elapsed() >= Duration::from_secs(600));
}

#[leak_test]
async fn a_result_test_returns_its_error_type() -> Result<(), std::num::ParseIntError> {
    let n: u32 = "42".parse()?;
    assert_eq!(n, 42);
    Ok(())
}

#[leak_test]
fn a_sync_result_test() -> Result<(), String> {
    Ok(())
}

#[leak_test(on_panic = "report")]
#[should_panic(expected = "the body's own assertion")]
async fn a_body_panic_is_the_test_failure() {
    // Leaks and then panics: the panic is what fails the test; the leak report is printed after.
    tokio::spawn(std::future::pending::<()>());
    panic!("the body's own assertion");
}

#[leak_test(crate = "::leakcheck", backtrace = false, kinds = ["tasks"])]
async fn crate_backtrace_and_kinds_are_accepted() {
    let t = tokio::spawn(async { 1 });
    assert_eq!(t.await.unwrap(), 1);
}

/// A leak test whose report the next test inspects.
#[leak_test(kinds = ["tasks"], settle = "50ms", backtrace = false)]
#[ignore = "a deliberate leak: `options_reach_the_check` runs it"]
async fn leaks_one_task() {
    checkpoint("spawned");
    tokio::spawn(std::future::pending::<()>());
}

#[test]
fn options_reach_the_check() {
    let reports = leakcheck::__private::capture(leaks_one_task);
    let r = &reports[0];
    assert_eq!(r.kinds, [Kind::Task], "kinds");
    assert_eq!(r.settle.deadline_ms, 50.0, "settle");
    let s = r.unknown().next().expect("the leaked task");
    assert!(
        s.backtrace.is_empty(),
        "backtrace = false: {:?}",
        s.backtrace
    );
    assert_eq!(r.lifecycle.columns, ["baseline", "spawned", "final"]);
    assert_eq!(
        r.label.as_deref(),
        Some("leak_test::options::leaks_one_task")
    );
}

#[test]
fn the_json_report_is_written_per_test() {
    leakcheck::__private::capture(leaks_one_task);
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let path = target.join("leakcheck/leak_test.options.leaks_one_task.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(json["survivors"][0]["kind"], "task");
}

#[leak_test(allow = ["metrics-ticker", "spawn_location=options\\.rs"], kinds = ["tasks"])]
#[ignore = "run by `allow_takes_names_and_patterns`"]
async fn leaks_an_allowed_task() {
    tokio::spawn(std::future::pending::<()>());
}

#[test]
fn allow_takes_names_and_patterns() {
    let reports = leakcheck::__private::capture(leaks_an_allowed_task);
    let r = &reports[0];
    assert!(r.is_clean(), "{}", r.to_text());
    let s = r.known().next().unwrap();
    match &s.status {
        Status::Known { rule, reason, .. } => {
            assert_eq!(rule, "spawn_location=options\\.rs");
            assert!(reason.contains("allowed by this test"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The lifecycle of a small service, recorded as a reviewed snapshot: a known ticker survives
/// (allowed by name), the workers are gone after close.
#[leak_test(flavor = "multi_thread", worker_threads = 2, snapshot, allow = ["metrics-ticker"])]
async fn lifecycle_snapshot() {
    leakcheck_tests::scenarios::metrics_lib::start_global_ticker();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
        })
        .collect();
    checkpoint("started");
    tx.send(true).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    checkpoint("closed");
}
