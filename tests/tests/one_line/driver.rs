//! Runs this very binary again as a child, the way `cargo test` (every test in one process) and
//! `cargo nextest` (one process per test, `--exact <name>`) run it, with the demo leak on and
//! off, and checks the child's exit status and report. The binary runs itself so that it is
//! always the one just built, under either runner.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LEAKY: &str = "forwarder_thread_is_joined";

/// Runs this binary with `args`, the demo leak on or off, its JSON reports going to `reports`.
fn run(args: &[&str], leak: bool, reports: &Path) -> Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(args)
        // Never this module again: the child would run itself.
        .args(["--skip", "driver::"])
        .env("LEAKCHECK_REPORT_DIR", reports)
        .env_remove("LEAKCHECK_DEMO_LEAK")
        .env_remove("NEXTEST_EXECUTION_MODE");
    if leak {
        c.env("LEAKCHECK_DEMO_LEAK", "1");
    }
    c.output().unwrap()
}

/// An empty directory for one run's JSON reports, under the target directory (kept for a look
/// after a failure, emptied by the next run).
fn reports_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("one-line-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The names of the JSON reports written to `dir`.
fn reports(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_names_the_leak(err: &str) {
    assert!(err.contains("UNKNOWN thread ×1 · unnamed thread"), "{err}");
    assert!(err.contains(&format!("(left by test `{LEAKY}`)")), "{err}");
    assert!(
        err.contains(&format!(
            "one_line::{LEAKY}::{{{{closure}}}} at tests/tests/one_line/main.rs:"
        )),
        "{err}"
    );
}

#[test]
fn the_whole_binary_fails_on_the_demo_leak_and_names_its_test() {
    let dir = reports_dir("binary");
    let out = run(&[], true, &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(101), "{err}");
    // The converted test fails by its own check; every other test passes.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("test converted_test_checks_itself ... FAILED"),
        "{stdout}"
    );
    assert!(stdout.contains(" 1 failed;"), "{stdout}");
    // Its thread is in its own report, and not again in the binary's (which has one thread).
    assert!(
        stdout.contains("leakcheck: leaked 1 thread in `one_line::converted_test_checks_itself`"),
        "{stdout}"
    );
    assert!(!err.contains("converted_test_checks_itself"), "{err}");
    assert!(
        err.contains("leakcheck: leaked 1 thread in `one_line (whole test binary)`"),
        "{err}"
    );
    assert_names_the_leak(&err);
    assert!(
        err.contains("checked once for the whole test binary"),
        "{err}"
    );
    assert_eq!(
        reports(&dir),
        [
            "one_line.converted_test_checks_itself.json",
            "one_line__whole_test_binary_.json"
        ]
    );
}

#[test]
fn one_test_per_process_as_nextest_runs_it_is_checked_exactly() {
    let dir = reports_dir("exact");
    let out = run(&["--exact", LEAKY], true, &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(101), "{err}");
    assert!(
        err.contains(&format!(
            "leakcheck: leaked 1 thread in `one_line::{LEAKY}`"
        )),
        "{err}"
    );
    assert_names_the_leak(&err);
    assert!(
        !err.contains("checked once for the whole test binary"),
        "{err}"
    );
    assert_eq!(reports(&dir), [format!("one_line.{LEAKY}.json")]);

    // Another test of the same process-per-test run is clean.
    let out = run(&["--exact", "a_published_message_is_handled"], true, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("leakcheck"), "{}", stderr(&out));
}

#[test]
fn without_the_demo_leak_the_binary_passes() {
    let dir = reports_dir("clean");
    let out = run(&[], false, &dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("leakcheck"), "{err}");
    // A clean check writes its report too.
    assert_eq!(
        reports(&dir),
        [
            "one_line.converted_test_checks_itself.json",
            "one_line__whole_test_binary_.json"
        ]
    );
}

#[test]
fn listing_the_tests_checks_nothing() {
    let dir = reports_dir("list");
    let out = run(&["--list", "--format", "terse"], true, &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{LEAKY}: test")), "{stdout}");
    assert!(reports(&dir).is_empty());
}
