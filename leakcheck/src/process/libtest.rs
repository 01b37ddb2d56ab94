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
    // A test binary lists its tests in milliseconds (it runs inside the first check's turn);
    // never hang a test on it. The list is read as it comes, until the child closes its end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let complete = child
        .stdout
        .take()
        .is_some_and(|stdout| read_until_closed(stdout, deadline, &mut out));
    if !complete {
        let _ = child.kill();
    }
    let _ = child.wait();
    if !complete {
        return Vec::new();
    }
    parse_list(&String::from_utf8_lossy(&out))
}

/// Reads `pipe` into `out` until the writer closes it (`true`) or `deadline` passes.
fn read_until_closed(
    mut pipe: std::process::ChildStdout,
    deadline: Instant,
    out: &mut Vec<u8>,
) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut p, 1, ms) } < 0
            && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return false;
        }
        if p.revents == 0 {
            continue;
        }
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
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
