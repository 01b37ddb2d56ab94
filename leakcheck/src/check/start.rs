//! Starting a check: the runtime it builds, the baseline it takes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::task::Id;

use super::settle::poll_until;
use super::turns::Turn;
use crate::component;
use crate::config::{CheckBuilder, Kinds, Mode, ReportDir};
use crate::process;
use crate::report::{Kind, Note};
use crate::rules::RuleSet;
use crate::tasks::{self, Registry, TaskRecord};
use crate::Error;

/// The component of a thread spawned without a name from the check's thread.
/// The component of the checked runtime's own threads.
pub(super) const RUNTIME_COMPONENT: &str = "tokio (checked runtime)";

pub(super) const UNNAMED_THREAD: &str = "unnamed thread";

/// Worker and blocking threads of a runtime built by leakcheck carry this name.
pub const RUNTIME_THREAD_NAME: &str = "leakcheck-rt";

/// Which runtime a check builds.
pub(crate) enum RuntimeSpec {
    None,
    /// A current-thread runtime, its clock paused or not.
    CurrentThread(bool),
    MultiThread(usize),
    Custom(Box<tokio::runtime::Builder>),
}

impl CheckBuilder {
    /// Starts a check of the process-wide kinds only (threads, descriptors, children): for
    /// synchronous code.
    pub fn start(self) -> Result<Check, Error> {
        Check::start(self, RuntimeSpec::None)
    }

    /// Starts a check with an instrumented current-thread runtime.
    pub fn start_current_thread(self) -> Result<Check, Error> {
        Check::start(self, RuntimeSpec::CurrentThread(false))
    }

    /// Starts a check with an instrumented current-thread runtime whose clock starts paused
    /// (as `#[tokio::test(start_paused = true)]`).
    pub fn start_current_thread_paused(self) -> Result<Check, Error> {
        Check::start(self, RuntimeSpec::CurrentThread(true))
    }

    /// Starts a check with an instrumented multi-thread runtime of `workers` threads.
    pub fn start_multi_thread(self, workers: usize) -> Result<Check, Error> {
        Check::start(self, RuntimeSpec::MultiThread(workers.max(1)))
    }

    /// Starts a check on a runtime built from the caller's own `builder`, after installing the
    /// task hooks on it (they replace any spawn/terminate hooks the builder had).
    pub fn start_with(self, builder: tokio::runtime::Builder) -> Result<Check, Error> {
        Check::start(self, RuntimeSpec::Custom(Box::new(builder)))
    }
}

/// One reading of the process-wide kinds a check tracks.
#[derive(Default)]
pub(super) struct ProcessState {
    pub(super) threads: Vec<process::Thread>,
    pub(super) fds: Vec<process::Fd>,
    pub(super) children: Vec<process::Child>,
    /// `process::boot_ticks()` just before the reading.
    pub(super) ticks: u64,
    /// `process::made()` just before the reading.
    pub(super) made: Option<process::Made>,
}

impl ProcessState {
    /// `unread`: threads waiting for a turn while the reading check holds its own (see
    /// [`Check::unread`]): listed, not read.
    pub(super) fn read(kinds: &Kinds, unread: Option<&HashSet<i32>>) -> Self {
        let ticks = process::boot_ticks();
        let made = process::made();
        process::unrecorded(|| Self {
            threads: if kinds.threads {
                process::threads_but(unread.unwrap_or(&HashSet::new()))
            } else {
                Vec::new()
            },
            fds: if kinds.fds {
                process::fds()
            } else {
                Vec::new()
            },
            children: if kinds.children {
                process::children()
            } else {
                Vec::new()
            },
            ticks,
            made,
        })
    }

    /// This reading of `kept` kinds, with the other kinds of `kinds` read now (`unread` as in
    /// [`ProcessState::read`]).
    pub(super) fn renewed(
        mut self,
        kinds: &Kinds,
        kept: &Kinds,
        unread: Option<&HashSet<i32>>,
    ) -> Self {
        let fresh = Kinds {
            tasks: false,
            threads: kinds.threads && !kept.threads,
            fds: kinds.fds && !kept.fds,
            children: kinds.children && !kept.children,
        };
        let mut now = if fresh.any_process() {
            Self::read(&fresh, unread)
        } else {
            Self::default()
        };
        if !kept.threads {
            self.threads = std::mem::take(&mut now.threads);
        }
        if !kept.fds {
            self.fds = std::mem::take(&mut now.fds);
        }
        if !kept.children {
            self.children = std::mem::take(&mut now.children);
        }
        self
    }
}

/// Live counts per (kind, component).
pub(super) type Counts = BTreeMap<(Kind, String), usize>;

pub(super) struct Baseline {
    /// `process::boot_ticks()` at the baseline: anything that started before is not new.
    pub(super) ticks: u64,
    pub(super) tasks: FxHashSet<Id>,
    pub(super) task_count: usize,
    /// Live `leakcheck::LocalSet` tasks.
    pub(super) local_tasks: FxHashSet<u64>,
    pub(super) threads: HashSet<(i32, u64)>,
    /// By number, target and stamp: a number closed and made again meanwhile is another
    /// descriptor, even with the same target (see `process::Fd::stamp`).
    pub(super) fds: HashSet<process::Fd>,
    /// By (pid, start time), with the component each had then: a child that execs another
    /// program during the check is the same child (a spawn caught between fork and exec reads
    /// as this process's command line at the baseline).
    pub(super) children: HashMap<(i32, u64), String>,
}

impl Baseline {
    /// Whether a thread or child (`id`, start time) existed at the baseline: listed then, or
    /// started before it (a listing of `/proc` can miss an entry; a start time cannot lie).
    pub(super) fn had(&self, listed: &HashSet<(i32, u64)>, id: i32, start: u64) -> bool {
        start < self.ticks || listed.contains(&(id, start))
    }

    /// Whether child `c` existed at the baseline (as [`Baseline::had`]).
    pub(super) fn had_child(&self, c: &process::Child) -> bool {
        c.start < self.ticks || self.children.contains_key(&(c.pid, c.start))
    }

    /// The component child `c` is counted under: the one it had at the baseline, if listed.
    pub(super) fn child_component(&self, c: &process::Child) -> String {
        self.children
            .get(&(c.pid, c.start))
            .cloned()
            .unwrap_or_else(|| component::of_cmdline(&c.cmdline))
    }
}

/// A running leak check. See the [crate docs](crate).
pub struct Check {
    pub(super) label: Option<String>,
    pub(super) settle: Duration,
    pub(super) dump_timeout: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) kinds: Kinds,
    pub(super) rules: RuleSet,
    pub(super) runtime: Option<tokio::runtime::Runtime>,
    pub(super) registry: Option<Arc<Registry>>,
    pub(super) baseline: Baseline,
    pub(super) checkpoints: Mutex<Vec<(String, Counts)>>,
    pub(super) components: Mutex<FxHashMap<usize, (Arc<str>, bool)>>,
    pub(super) notes: Vec<Note>,
    pub(super) mode: Mode,
    pub(super) report_dir: ReportDir,
    pub(super) hold: Duration,
    /// Names of this test binary's tests when running under parallel libtest.
    pub(super) test_names: Option<&'static HashSet<String>>,
    pub(super) own_tid: i32,
    /// This thread's name: a thread spawned without a name inherits it.
    pub(super) own_name: String,
    /// The main thread's name: libtest's new test threads carry it until they rename.
    pub(super) main_name: String,
    /// The checked runtime's own threads, when leakcheck built the runtime (a caller's builder
    /// keeps its own thread hooks).
    pub(super) runtime_threads: Option<Arc<RuntimeThreads>>,
    /// Whether a task dump timed out: a worker was blocked (a thread that was a worker is then
    /// reported as the blocked one; otherwise as a blocking-pool thread, which it may have
    /// become during shutdown).
    pub(super) worker_blocked: std::sync::atomic::AtomicBool,
    /// `process::unsettled_listings()` when the check started.
    pub(super) unsettled_listings: u64,
    /// Where threads and descriptors made during the check come from.
    pub(super) origins: Option<process::Recording>,
    /// Each thread's and descriptor's origin, resolved once (keyed as in settling).
    pub(super) provenance: Mutex<FxHashMap<String, Arc<super::classify::Provenance>>>,
    pub(super) _adopt: Option<process::AdoptOrphans>,
    /// Held until the check is concluded (then given back before the JSON report is written).
    pub(super) _turn: Option<Turn>,
    /// This check's span, seen by a whole binary's check (which leaves its survivors to it).
    pub(super) nested: Option<super::binary::Nested>,
    /// `Some` for the check of a whole test binary.
    pub(super) binary: Option<super::binary::Binary>,
}

impl Check {
    /// A builder with every setting at its default (nothing read from the environment).
    pub fn builder() -> CheckBuilder {
        CheckBuilder::default()
    }

    pub(crate) fn start(cfg: CheckBuilder, spec: RuntimeSpec) -> Result<Check, Error> {
        // No kind to check, two rules of one name: an error before anything is measured.
        cfg.validate()?;
        let mut kinds = cfg.kinds;
        let mut notes = Vec::new();
        if matches!(spec, RuntimeSpec::None) {
            kinds.tasks = false;
        }
        if kinds.any_process() && !process::supported() {
            notes.push(Note {
                kind: None,
                message: "threads, file descriptors and child processes are not checked on this platform (no /proc)".into(),
            });
            kinds.threads = false;
            kinds.fds = false;
            kinds.children = false;
        }
        // Process-wide kinds would blame one check for another's resources (its runtime's
        // threads and descriptors included): such a check runs alone.
        // A whole binary's check takes no turn: it only reads a baseline now and the end state
        // at exit, and the checks of its tests run meanwhile.
        let turn = (!cfg.whole_binary).then(|| Turn::acquire(kinds.any_process()));
        // Orphans of the test's children stay visible (they are re-parented to this process).
        let adopt = kinds.children.then(process::adopt_orphans);
        let test_names = if kinds.any_process() && cfg.in_leak_test {
            process::sibling_test_names()
        } else {
            None
        };
        if kinds.any_process() {
            // Synchronous code builds runtimes too (an HTTP client's blocking API does).
            warm_up_tokio_globals();
        }
        let origins = kinds.any_process().then(|| {
            if cfg.whole_binary {
                process::Recording::start_whole_binary()
            } else {
                process::Recording::start()
            }
        });
        // The baseline comes before the runtime exists, so its threads and descriptors are
        // checked too: they must be gone once it shuts down. The end state of the check whose
        // turn this one took over is the same reading (see `Turn::take_over`).
        let runner = test_names.is_some_and(|n| n.contains(&process::current_thread_name()));
        let state = turn
            .as_ref()
            .and_then(|t| t.take_over(&kinds, runner))
            .unwrap_or_else(|| {
                let waiting = Turn::waiting();
                ProcessState::read(&kinds, unread(turn.as_ref(), &waiting))
            });
        let ticks = state.ticks;
        let nested = (!cfg.whole_binary && kinds.any_process())
            .then(|| {
                super::binary::Nested::start(
                    &kinds,
                    origins.as_ref().map(process::Recording::generation),
                    ticks,
                )
            })
            .flatten();

        let mut registry = None;
        let runtime_threads = Arc::new(RuntimeThreads::default());
        let custom_runtime = matches!(spec, RuntimeSpec::Custom(_));
        let workers = match spec {
            RuntimeSpec::MultiThread(n) => n,
            _ => 0,
        };
        let runtime = match spec {
            RuntimeSpec::None => None,
            spec => {
                let custom = matches!(spec, RuntimeSpec::Custom(_));
                let reg = Registry::new(cfg.backtraces);
                let mut b = match spec {
                    RuntimeSpec::CurrentThread(paused) => {
                        let mut b = tokio::runtime::Builder::new_current_thread();
                        b.start_paused(paused);
                        b
                    }
                    RuntimeSpec::MultiThread(n) => {
                        let mut b = tokio::runtime::Builder::new_multi_thread();
                        b.worker_threads(n);
                        b
                    }
                    RuntimeSpec::Custom(b) => *b,
                    RuntimeSpec::None => unreachable!(),
                };
                if cfg.shutdown_on_panic {
                    #[cfg(tokio_unstable)]
                    b.unhandled_panic(tokio::runtime::UnhandledPanic::ShutdownRuntime);
                    #[cfg(not(tokio_unstable))]
                    return Err(Error::Setting {
                        setting: "unhandled_panic",
                        reason: "\"shutdown_runtime\" is an unstable tokio API: build with RUSTFLAGS=\"--cfg tokio_unstable\"".into(),
                    });
                }
                if !custom {
                    b.thread_name(RUNTIME_THREAD_NAME).enable_all();
                    // Which threads are the runtime's own: a thread spawned without a name from
                    // inside a task carries the same name, and must not be taken for one of them.
                    let rt = runtime_threads.clone();
                    b.on_thread_start(move || rt.started());
                }
                if tasks::instrument(&mut b, &reg) {
                    registry = Some(reg);
                } else if kinds.tasks {
                    notes.push(Note {
                        kind: Some(Kind::Task),
                        message: "tasks are counted, not identified: build with RUSTFLAGS=\"--cfg tokio_unstable\" for spawn sites, backtraces and await traces".into(),
                    });
                }
                Some(b.build().map_err(Error::Runtime)?)
            }
        };
        if kinds.threads && workers > 0 {
            wait_for_named_workers(workers);
        }
        let task_count = runtime
            .as_ref()
            .map_or(0, |r| r.metrics().num_alive_tasks());
        let baseline = Baseline {
            ticks,
            tasks: registry.as_ref().map(|r| r.ids()).unwrap_or_default(),
            task_count,
            local_tasks: if kinds.tasks {
                tasks::local_ids()
            } else {
                FxHashSet::default()
            },
            threads: state.threads.iter().map(|t| (t.tid, t.start)).collect(),
            fds: state.fds.iter().cloned().collect(),
            children: state
                .children
                .iter()
                .map(|c| ((c.pid, c.start), component::of_cmdline(&c.cmdline)))
                .collect(),
        };
        let check = Check {
            label: cfg.label,
            settle: cfg.settle,
            dump_timeout: cfg.dump_timeout,
            shutdown_timeout: cfg.shutdown_timeout,
            kinds,
            rules: cfg.rules,
            runtime,
            registry,
            baseline,
            checkpoints: Mutex::new(Vec::new()),
            components: Mutex::new(FxHashMap::default()),
            notes,
            mode: cfg.mode,
            report_dir: cfg.report_dir,
            hold: cfg.hold,
            test_names,
            own_tid: process::current_tid(),
            own_name: process::current_thread_name(),
            main_name: process::main_thread_name().to_string(),
            runtime_threads: (!custom_runtime).then_some(runtime_threads),
            worker_blocked: std::sync::atomic::AtomicBool::new(false),
            unsettled_listings: process::unsettled_listings(),
            origins,
            provenance: Mutex::new(FxHashMap::default()),
            _adopt: adopt,
            _turn: turn,
            nested,
            binary: cfg.whole_binary.then(super::binary::Binary::default),
        };
        let counts = check.counts_with(&state);
        lock(&check.checkpoints).push(("baseline".into(), counts));
        Ok(check)
    }

    /// The checked runtime's handle, to spawn onto it or enter it.
    ///
    /// # Panics
    /// When the check was started without a runtime ([`CheckBuilder::start`]).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime().handle()
    }

    /// Runs `future` to completion on the checked runtime.
    ///
    /// # Panics
    /// When the check was started without a runtime ([`CheckBuilder::start`]).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// Threads of `waiting` whose `/proc` entries a reading may skip: while this check holds a
    /// turn of its own they wait until it ends, and no check counts them.
    pub(super) fn unread<'a>(&self, waiting: &'a HashSet<i32>) -> Option<&'a HashSet<i32>> {
        unread(self._turn.as_ref(), waiting)
    }

    pub(crate) fn runtime_ref(&self) -> &tokio::runtime::Runtime {
        self.runtime()
    }

    pub(super) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("this check has no runtime: start it with start_current_thread, start_multi_thread or start_with")
    }
}

fn unread<'a>(turn: Option<&Turn>, waiting: &'a HashSet<i32>) -> Option<&'a HashSet<i32>> {
    turn.filter(|t| t.is_exclusive()).map(|_| waiting)
}

/// `file:line:column` of a task's spawn.
pub(super) fn location(rec: &TaskRecord) -> String {
    let l = rec.location;
    format!("{}:{}:{}", l.file(), l.line(), l.column())
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new thread carries its creator's name until it names itself. Wait (briefly, bounded) until
/// the runtime's workers have, so that checkpoints count them under the runtime's component.
fn wait_for_named_workers(workers: usize) {
    poll_until(Duration::from_millis(100), || {
        process::threads()
            .iter()
            .filter(|t| t.name == RUNTIME_THREAD_NAME)
            .count()
            >= workers
    });
}

/// tokio creates a process-wide socket pair for signal delivery the first time a runtime with a
/// signal driver is built, and keeps it for the life of the process: a harmless singleton. Create
/// it before the first baseline so that no check blames its test for it.
fn warm_up_tokio_globals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            drop(rt);
        }
    });
}

/// The threads of the runtime a check built, recorded by its thread-start hook, and which of
/// them were its workers when the check finished.
#[derive(Default)]
pub(super) struct RuntimeThreads {
    threads: Mutex<FxHashMap<std::thread::ThreadId, i32>>,
    /// `None` until [`RuntimeThreads::note_workers`] could tell (it needs `tokio_unstable`).
    workers: Mutex<Option<FxHashSet<i32>>>,
}

impl RuntimeThreads {
    fn started(&self) {
        lock(&self.threads).insert(std::thread::current().id(), process::current_tid());
    }

    /// Records which threads run the runtime's workers now (before its shutdown): a blocking
    /// pool thread may have been a worker earlier, and a worker may run on a new thread.
    pub(super) fn note_workers(&self, rt: &tokio::runtime::Runtime) {
        #[cfg(tokio_unstable)]
        {
            let m = rt.metrics();
            let threads = lock(&self.threads);
            let workers = (0..m.num_workers())
                .filter_map(|w| m.worker_thread_id(w))
                .filter_map(|id| threads.get(&id).copied())
                .collect();
            *lock(&self.workers) = Some(workers);
        }
        #[cfg(not(tokio_unstable))]
        let _ = rt;
    }

    /// What `tid` is to the runtime: a worker, a blocking-pool thread, one of its threads whose
    /// role is unknown, or none of its own.
    pub(super) fn role(&self, tid: i32) -> Option<RuntimeRole> {
        if !lock(&self.threads).values().any(|t| *t == tid) {
            return None;
        }
        Some(match &*lock(&self.workers) {
            Some(w) if w.contains(&tid) => RuntimeRole::Worker,
            Some(_) => RuntimeRole::Blocking,
            None => RuntimeRole::Unknown,
        })
    }
}

/// A thread's role in the checked runtime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RuntimeRole {
    Worker,
    Blocking,
    Unknown,
}

#[cfg(test)]
mod tests {
    use crate::{Check, Kinds};

    #[test]
    fn a_check_of_no_kind_is_an_error() {
        let none = Kinds {
            tasks: false,
            threads: false,
            fds: false,
            children: false,
        };
        let e = Check::builder()
            .kinds(none)
            .start_current_thread()
            .err()
            .expect("an error");
        assert!(e.to_string().contains("every kind is off"), "{e}");
    }
}
