//! Tokio tasks: the spawn registry, spawn backtraces, symbols and task dumps.

mod capture;
mod dump;
mod registry;
mod symbols;

pub use dump::{AwaitLeaf, AwaitTrace};
pub use symbols::Frame;

pub(crate) use dump::{dump, DumpOutcome};
pub(crate) use registry::{with_name, Registry, TaskRecord};
pub(crate) use symbols::Symbolizer;

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
