//! Tokio tasks: the spawn registry, spawn backtraces, symbols and task dumps.

mod capture;
mod dump;
mod local;
mod registry;
mod symbols;

// Used by the hooks of `process::origins`.
#[cfg_attr(not(feature = "origins"), allow(unused_imports))]
pub(crate) use capture::capture_whole;
pub use dump::{AwaitLeaf, AwaitTrace};
pub(crate) use local::{local_ids, local_tasks};
pub use local::{spawn_local, LocalSet};
pub use symbols::Frame;

pub(crate) use dump::{dump, DumpOutcome};
pub(crate) use registry::{with_name, Registry, TaskRecord};
pub(crate) use symbols::{
    prefetch as prefetch_symbols, resolve as resolve_frames, user_and_via, workspace_root, Origin,
};

/// Installs the spawn and terminate hooks of `registry` on `builder`.
///
/// Without `--cfg tokio_unstable` tokio has no task hooks: nothing is installed and the check
/// falls back to counting tasks.
pub(crate) fn instrument(
    builder: &mut tokio::runtime::Builder,
    registry: &std::sync::Arc<Registry>,
) -> bool {
    #[cfg(tokio_unstable)]
    {
        let r = registry.clone();
        builder.on_task_spawn(move |m| r.on_spawn(m.id(), m.spawned_at()));
        let r = registry.clone();
        builder.on_task_terminate(move |m| r.on_terminate(m.id()));
        true
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = (builder, registry);
        false
    }
}

/// Captures one spawn backtrace and returns its depth (benchmarks only).
pub(crate) fn capture_for_bench() -> usize {
    capture::capture().len()
}

/// Names the tasks spawned inside `f` on this thread, so that reports show the name. tokio does
/// not pass the name given to `tokio::task::Builder` to task hooks; wrap that call:
///
/// ```
/// # let check = leakcheck::Check::builder().start_current_thread().unwrap();
/// # let _g = check.handle().enter();
/// let handle = leakcheck::with_task_name("dispatcher", || tokio::spawn(async {}));
/// # drop(handle);
/// ```
pub fn with_task_name<R>(name: &str, f: impl FnOnce() -> R) -> R {
    with_name(name, f)
}
