//! Parallel safety under `cargo test`: a thread of another test of this binary that starts
//! while a check runs is told apart by its name (libtest names it after the test) and is not
//! blamed, nor is a child process such a thread starts. Under nextest every test has its own
//! process, so no sibling can run; the same thread or child is then an ordinary leak, and these
//! tests assert that instead.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use leakcheck::{leak_test, Kind, Status};
use leakcheck_tests::scenarios::{park, release, Reap, ReapPid};

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
        // Clean: the thread is not blamed. Counted: at least it (a real test of this binary
        // may be running too).
        assert!(r.is_clean(), "{}", r.to_text());
        assert!(r.settle.test_threads >= 1, "{}", r.to_text());
    }
}

/// Stands for the same test starting a child process (which starts one of its own) during
/// this check.
#[leak_test(kinds = ["children"], settle = "100ms")]
#[ignore = "run by `a_sibling_test_child_is_not_blamed`"]
fn a_sibling_test_starts_a_child_meanwhile() {
    let child = std::thread::Builder::new()
        .name("options::the_default_runtime_is_current_thread".into())
        .spawn(|| {
            std::process::Command::new("sh")
                .args(["-c", "sleep 30; true"])
                .spawn()
                .unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    let pid = child.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let until = Instant::now() + Duration::from_secs(10);
    let grandchild = loop {
        let listed = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = listed.split_whitespace().next() {
            break p.parse::<i32>().unwrap();
        }
        assert!(Instant::now() < until, "sh started no child");
        std::thread::sleep(Duration::from_millis(1));
    };
    park(
        "sibling-child",
        vec![Box::new(ReapPid(grandchild)), Box::new(Reap(child))],
    );
}

#[test]
fn a_sibling_test_child_is_not_blamed() {
    let reports = leakcheck::__private::capture(a_sibling_test_starts_a_child_meanwhile);
    release("sibling-child");
    let r = &reports[0];
    let text = r.to_text();
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
        // Both are leaks; the child names the line that started it.
        let children: Vec<_> = r.unknown().filter(|s| s.kind == Kind::Child).collect();
        assert_eq!(children.len(), 2, "{text}");
        let sh = children
            .iter()
            .find(|s| s.component == "sh")
            .expect("the child");
        let at = sh.user_frame.as_ref().expect("where it was started");
        assert!(
            at.function
                .contains("a_sibling_test_starts_a_child_meanwhile"),
            "{text}"
        );
        assert_eq!(r.settle.test_children, 0);
    } else {
        assert!(r.is_clean(), "{text}");
        assert!(r.settle.test_children >= 2, "{text}");
    }
}

/// Stands for the same test opening a file during this check, and holding it open past it.
#[leak_test(kinds = ["fds"], settle = "100ms")]
#[ignore = "run by `a_sibling_test_file_is_not_blamed`"]
fn a_sibling_test_opens_a_file_meanwhile() {
    let (opened_tx, opened) = mpsc::channel::<()>();
    let (done, wait) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("options::the_default_runtime_is_current_thread".into())
        .spawn(move || {
            let file = std::fs::File::open("Cargo.toml").unwrap();
            opened_tx.send(()).unwrap();
            let _ = wait.recv();
            drop(file);
        })
        .unwrap();
    opened.recv().unwrap();
    park("sibling-file", vec![Box::new(done)]);
}

#[test]
fn a_sibling_test_file_is_not_blamed() {
    let reports = leakcheck::__private::capture(a_sibling_test_opens_a_file_meanwhile);
    let r = &reports[0];
    let text = r.to_text();
    release("sibling-file");
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
        // A leak; it names the line that opened it.
        let s = r
            .unknown()
            .find(|s| s.kind == Kind::Fd && s.description.ends_with("Cargo.toml"))
            .unwrap_or_else(|| panic!("the file: {text}"));
        let at = s.user_frame.as_ref().expect("where it was opened");
        assert!(
            at.function
                .contains("a_sibling_test_opens_a_file_meanwhile"),
            "{text}"
        );
        assert_eq!(r.settle.test_fds, 0);
    } else {
        assert!(r.is_clean(), "{text}");
        assert!(r.settle.test_fds >= 1, "{text}");
    }
}
