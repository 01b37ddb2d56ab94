//! Where each surviving task is suspended: a tokio task dump, taken under a timeout and joined to
//! the spawn records by task id.
//!
//! A dump can hang when a worker thread is blocked (every worker must reach a barrier), so on a
//! multi-thread runtime it runs on a helper thread and the caller waits at most the dump timeout;
//! on timeout the report says so and the check goes on without await traces.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::task::Id;

use super::symbols::Frame;

/// What one task is waiting on, from a task dump.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AwaitTrace {
    /// One entry per leaf future the task is suspended in (several under `join!`/`select!`).
    pub leaves: Vec<AwaitLeaf>,
}

/// One suspended leaf future.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AwaitLeaf {
    /// The tokio resource polled last, for example `tokio::sync::mpsc::chan::Rx<T,S>::recv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The frames outside the runtime, innermost (the await point) first.
    pub frames: Vec<Frame>,
    /// The runtime's own frames (tokio's resources: `watch`, `Notify`, `mpsc`, ...), innermost
    /// first: rules match them, the report does not show them.
    #[serde(skip)]
    pub runtime_frames: Vec<String>,
}

impl AwaitTrace {
    /// The innermost frame outside the runtime of the first leaf: "where it is suspended".
    pub fn await_point(&self) -> Option<&Frame> {
        self.leaves.first().and_then(|l| l.frames.first())
    }
}

/// How a dump went.
pub(crate) enum DumpOutcome {
    Done(FxHashMap<Id, AwaitTrace>),
    TimedOut(Duration),
    #[cfg_attr(tokio_unstable, allow(dead_code))]
    Unsupported(&'static str),
}

/// How many dumps are taken at most to catch tasks that were running or just woken (a dump
/// misses those).
const DUMP_ATTEMPTS: usize = 3;

/// Dumps `rt`'s tasks and resolves the traces of the `wanted` ones.
pub(crate) fn dump(
    rt: &tokio::runtime::Runtime,
    wanted: &FxHashSet<Id>,
    timeout: Duration,
) -> DumpOutcome {
    let start = Instant::now();
    let mut traces = FxHashMap::default();
    for _ in 0..DUMP_ATTEMPTS {
        let missing: FxHashSet<Id> = wanted
            .iter()
            .filter(|id| !traces.contains_key(*id))
            .copied()
            .collect();
        let left = timeout.saturating_sub(start.elapsed());
        match imp::dump(rt, &missing, left) {
            DumpOutcome::Done(more) => traces.extend(more),
            other if traces.is_empty() => return other,
            _ => break,
        }
        if traces.len() == wanted.len() {
            break;
        }
    }
    DumpOutcome::Done(traces)
}

#[cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
))]
mod imp {
    use super::*;

    pub(super) fn dump(
        rt: &tokio::runtime::Runtime,
        wanted: &FxHashSet<Id>,
        timeout: Duration,
    ) -> DumpOutcome {
        use tokio::runtime::RuntimeFlavor;
        let start = Instant::now();
        let raw = match rt.handle().runtime_flavor() {
            RuntimeFlavor::CurrentThread => {
                let h = rt.handle().clone();
                Some(rt.block_on(async move { tokio::time::timeout(timeout, h.dump()).await.ok() }))
                    .flatten()
            }
            _ => {
                let h = rt.handle().clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let spawned =
                    crate::process::spawn_own(crate::process::DUMP_THREAD_NAME, move || {
                        let _ = tx.send(h.block_on(h.dump()));
                    });
                match spawned {
                    Ok(join) => match rx.recv_timeout(timeout) {
                        Ok(d) => {
                            let _ = join.join();
                            Some(d)
                        }
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            }
        };
        let Some(raw) = raw else {
            return DumpOutcome::TimedOut(start.elapsed());
        };
        let mut traces = FxHashMap::default();
        for task in raw.tasks().iter() {
            if wanted.contains(&task.id()) {
                traces.insert(task.id(), convert(task.trace()));
            }
        }
        DumpOutcome::Done(traces)
    }

    fn convert(trace: &tokio::runtime::dump::Trace) -> AwaitTrace {
        let mut leaves = Vec::new();
        for bt in trace.resolve_backtraces() {
            let mut resource = None;
            let mut frames = Vec::new();
            let mut runtime_frames = Vec::new();
            // tokio trims the frames below the leaf and above the task's root: what is left runs
            // from the resource polled last (innermost) out to the task's own future.
            for frame in bt.frames() {
                for sym in frame.symbols() {
                    let function = sym
                        .name_demangled()
                        .map(|n| strip_hash(n).to_string())
                        .unwrap_or_else(|| format!("{:p}", frame.ip()));
                    let f = Frame {
                        function,
                        file: sym.filename().map(crate::tasks::symbols::relative),
                        line: sym.lineno(),
                    };
                    if f.is_runtime() {
                        if resource.is_none()
                            && frames.is_empty()
                            && f.function.starts_with("tokio::")
                        {
                            resource = Some(f.function.clone());
                        }
                        runtime_frames.push(f.function);
                    } else {
                        frames.push(f);
                    }
                }
            }
            leaves.push(AwaitLeaf {
                resource,
                frames,
                runtime_frames,
            });
        }
        // A `select!` polls its branches in a random order: the same task must read the same on
        // every run.
        leaves.sort_by_cached_key(|l| {
            (
                l.resource.clone(),
                l.frames
                    .first()
                    .map(|f| (f.function.clone(), f.file.clone(), f.line)),
            )
        });
        AwaitTrace { leaves }
    }
}

#[cfg(not(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
)))]
mod imp {
    use super::*;

    pub(super) fn dump(_: &tokio::runtime::Runtime, _: &FxHashSet<Id>, _: Duration) -> DumpOutcome {
        DumpOutcome::Unsupported(
            "task dumps need Linux on x86, x86_64, aarch64 or s390x and `--cfg tokio_unstable`; survivors are shown without await traces",
        )
    }
}

/// Drops the `::h0123abcd` hash suffix of a legacy-mangled symbol.
pub(crate) fn strip_hash(name: &str) -> &str {
    match name.rfind("::h") {
        Some(i) if name[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) && name.len() - i == 19 => {
            &name[..i]
        }
        _ => name,
    }
}
