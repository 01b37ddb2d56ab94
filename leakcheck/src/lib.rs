#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod check;
mod component;
mod config;
mod console;
mod error;
mod harness;
mod process;
mod report;
mod rules;
mod summary;
mod tasks;

pub use check::{Check, RUNTIME_THREAD_NAME};
pub use config::{
    CheckBuilder, Kinds, Mode, DEFAULT_BACKTRACES, DEFAULT_DUMP_TIMEOUT, DEFAULT_MODE,
    DEFAULT_REPORT_DIR, DEFAULT_SETTLE, DEFAULT_SHUTDOWN_TIMEOUT,
};
#[cfg(feature = "console")]
pub use console::DEFAULT_CONSOLE_HOLD;
pub use error::Error;
pub use harness::checkpoint;
#[doc = include_str!("../docs/leak_test.md")]
pub use leakcheck_macros::leak_test;
pub use report::{
    Kind, Lifecycle, LifecycleRow, Lingered, Note, Report, SettleStats, Status, Survivor,
    SCHEMA_VERSION,
};
pub use rules::{FileConfig, Rule, RuleBuilder, RuleSet};
pub use tasks::{spawn_local, with_task_name, LocalSet};
pub use tasks::{AwaitLeaf, AwaitTrace, Frame};

/// Checks a whole test binary for leaked threads, file descriptors and child processes: one
/// line at the top level of a test crate (an integration test's file, or a `lib.rs` or `main.rs`
/// whose unit tests are to be checked), for a suite of plain `#[tokio::test]` or `#[test]`
/// functions.
///
/// ```no_run
/// leakcheck::check_test_binary!();
///
/// #[tokio::test]
/// async fn publishes() {
///     // an ordinary test, unchanged
/// }
/// # fn main() {}
/// ```
///
/// A process constructor takes the baseline before any test runs; when the test harness is
/// done, an exit hook settles (the usual deadline), classifies each survivor by the rules of
/// `leakcheck.toml` and the `LEAKCHECK_*` variables, writes the JSON report to
/// `target/leakcheck/`, and on an unknown survivor prints the text report to stderr and ends the
/// process with status 101 (in `LEAKCHECK_MODE=warn`, it only prints).
///
/// - Under `cargo nextest` (one process per test) the check is exact for each test, and the
///   report is labelled with it.
/// - Under `cargo test` it covers the whole binary (a note says so): a survivor names its test
///   where the thread's name (a thread spawned without a name carries its test's) or its
///   creation site (a frame in the test function) tells.
///
/// Tasks are not checked (each test's runtime is its own, and gone at exit): for tasks, replace
/// `#[tokio::test]` with [`leak_test`], which takes the same arguments. A `#[leak_test]` in the
/// same binary runs its own exact check, and what it judged is not reported again. The binary's
/// own harness (libtest's main thread and test threads) and leakcheck's threads are never
/// blamed. Listing (`--list`) or `--help` checks nothing; nor does a build without `cfg(test)`
/// or off Linux.
#[macro_export]
macro_rules! check_test_binary {
    () => {
        #[cfg(all(test, target_os = "linux"))]
        const _: () = {
            #[used]
            #[unsafe(link_section = ".init_array")]
            static __LEAKCHECK_CHECK_TEST_BINARY: extern "C" fn() = {
                extern "C" fn start() {
                    $crate::__private::check_test_binary(
                        ::core::env!("CARGO_MANIFEST_DIR"),
                        ::core::module_path!(),
                    );
                }
                start
            };
        };
    };
}

/// Internals exposed for benchmarks and the `#[leak_test]` macro; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::{
        capture, run_async, run_async_should_panic, run_sync, run_sync_should_panic, Options, Test,
    };
    pub use insta;

    /// What `check_test_binary!`'s constructor runs (see [`crate::check_test_binary`]).
    pub fn check_test_binary(manifest_dir: &'static str, module_path: &'static str) {
        crate::check::check_test_binary(manifest_dir, module_path);
    }

    /// Captures a spawn backtrace as the spawn hook does (for the benchmark).
    pub fn capture_backtrace() -> usize {
        crate::tasks::capture_for_bench()
    }

    /// Records where threads and descriptors are made until dropped, as a check of them does
    /// (the benchmark's origin figures).
    pub fn record_origins() -> impl Drop {
        crate::process::Recording::start()
    }

    /// Whether a descriptor made while recording gets its origin (the benchmark checks that it
    /// measures what it says).
    pub fn origins_recorded() -> bool {
        let rec = crate::process::Recording::start();
        // SAFETY: a fresh eventfd, closed at once.
        unsafe {
            let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
            let found = rec.fd(fd).is_some();
            libc::close(fd);
            found
        }
    }

    /// The check's runtime (the benchmark drives it directly).
    pub fn runtime(check: &crate::Check) -> &tokio::runtime::Runtime {
        check.runtime_ref()
    }

    /// Runs one settling round of `check`'s tasks: (survivors, any unknown).
    pub fn task_round(check: &crate::Check) -> (usize, bool) {
        check.bench_task_round()
    }
}

/// The `leakcheck summary` command, for the `leakcheck` binary; not a stable API.
#[doc(hidden)]
pub mod __summary {
    pub use crate::summary::{default_dir, run, Options, SummaryError};
}
