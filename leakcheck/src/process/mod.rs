//! Process-wide resources: OS threads, file descriptors and child processes, read from `/proc`.
//!
//! Each is identified so that reuse is not mistaken for survival: a thread by tid and start time,
//! a descriptor by number and target, a child by pid and start time.

mod children;
mod fds;
mod libtest;
mod threads;

pub(crate) use children::{children, Child};
pub(crate) use fds::{fds, Fd};
pub(crate) use libtest::{is_test_thread, sibling_test_names};
pub(crate) use threads::{current_tid, threads, Thread};

/// Whether `/proc` can be read on this platform.
pub(crate) fn supported() -> bool {
    cfg!(target_os = "linux") && std::path::Path::new("/proc/self/task").exists()
}

/// Reads `/proc/<pid>/stat` (or a task's) and returns the fields after the command name.
pub(crate) fn stat_fields(path: &str) -> Option<(String, Vec<String>)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let rest = s[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((comm, rest))
}
