#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod check;
mod component;
mod config;
#[cfg(feature = "console")]
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

/// Internals exposed for benchmarks and the `#[leak_test]` macro; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::{
        capture, run_async, run_async_should_panic, run_sync, run_sync_should_panic, Options, Test,
    };
    pub use insta;

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
