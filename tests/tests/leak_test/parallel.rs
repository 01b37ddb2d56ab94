//! Parallel safety under `cargo test`: a thread of another test of this binary that starts
//! while a check runs is told apart by its name (libtest names it after the test) and is not
//! blamed. Under nextest every test has its own process, so no sibling can run; the same thread
//! is then an ordinary leak, and this test asserts that instead.

use std::sync::mpsc;

use leakcheck::{leak_test, Kind, Status};
use leakcheck_tests::scenarios::{park, release};

/// Stands for the thread of the test `options::the_default_runtime_is_current_thread` starting
/// during this check.
#[leak_test(kinds = ["threads"], settle = "100ms")]
#[ignore = "run by `a_sibling_test_thread_is_not_blamed`"]
fn a_sibling_test_starts_meanwhile() {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("options::the_default_runtime_is_current_thread".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    park("sibling", vec![Box::new(tx)]);
}

#[test]
fn a_sibling_test_thread_is_not_blamed() {
    let reports = leakcheck::__private::capture(a_sibling_test_starts_meanwhile);
    release("sibling");
    let r = &reports[0];
    let one_process_per_test =
        std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    if one_process_per_test {
        let s = r.unknown().next().expect("the thread is a leak here");
        assert_eq!(s.kind, Kind::Thread);
        assert_eq!(s.status, Status::Unknown);
        assert_eq!(r.settle.test_threads, 0);
    } else {
        assert!(r.is_clean(), "{}", r.to_text());
        assert_eq!(r.settle.test_threads, 1, "{}", r.to_text());
    }
}
