//! Threads of the test harness. Under `cargo test`, libtest runs each test on a thread named
//! after the test, several at a time in one process. A check must not blame its test for the
//! thread of a test that started next to it, so it learns this binary's test names (once per
//! process, by running the binary with `--list`) and tells those threads apart by name.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Linux keeps 15 bytes of a thread's name.
const COMM_LEN: usize = 15;

/// The (truncated) names of this binary's tests, when other tests can run next to the current
/// one: the caller is a `#[leak_test]` (so this binary has libtest's harness and understands
/// `--list`) on a thread libtest named, and nextest is not running one test per process.
pub(crate) fn sibling_test_names() -> Option<&'static HashSet<String>> {
    if std::env::var_os("NEXTEST_EXECUTION_MODE").is_some_and(|m| m == "process-per-test") {
        return None;
    }
    if std::thread::current().name().is_none_or(|n| n == "main") {
        return None;
    }
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    Some(NAMES.get_or_init(|| list_tests().iter().map(|n| truncate(n)).collect()))
}

/// The names of this binary's tests in full, from `--list --format terse` (empty when the
/// binary cannot list them).
pub(crate) fn list_tests() -> Vec<String> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Ok(mut child) = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    // A test binary lists its tests in milliseconds; never hang a test on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Vec::new();
            }
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    }
    parse_list(&out)
}

/// The `name: test` lines of `--list --format terse`.
fn parse_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// A test's name as the kernel keeps it for the thread libtest names after the test.
pub(crate) fn truncate(name: &str) -> String {
    let bytes = &name.as_bytes()[..name.len().min(COMM_LEN)];
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terse_lists_and_truncates_like_the_kernel() {
        let names = parse_list(
            "corpus::std_thread_never_joined::clean: test\nshort: test\nbench_x: benchmark\n",
        );
        assert_eq!(names, ["corpus::std_thread_never_joined::clean", "short"]);
        assert_eq!(truncate(&names[0]), "corpus::std_thr");
        assert_eq!(truncate(&names[1]), "short");
    }

    #[test]
    fn an_unnamed_or_main_thread_never_lists() {
        let unnamed = std::thread::spawn(sibling_test_names).join().unwrap();
        assert!(unnamed.is_none());
        let main = std::thread::Builder::new()
            .name("main".into())
            .spawn(sibling_test_names)
            .unwrap()
            .join()
            .unwrap();
        assert!(main.is_none());
    }
}
