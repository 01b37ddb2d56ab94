//! A running check: baseline, checkpoints, settling, classification, report.
//!
//! The lifecycle is explicit: [`CheckBuilder`] starts a [`Check`] (taking the baseline), the code
//! under test runs on [`Check::block_on`] or [`Check::handle`], [`Check::checkpoint`] records
//! counts, and [`Check::finish`] settles, classifies, shuts the runtime down with a bounded
//! timeout and returns the [`Report`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::task::Id;

use crate::config::{CheckBuilder, Kinds, Mode, ReportDir};
use crate::process;
use crate::report::{
    Kind, Lifecycle, LifecycleRow, Lingered, Note, Report, SettleStats, Status, Survivor,
    SCHEMA_VERSION,
};
use crate::rules::{RuleSet, Subject};
use crate::tasks::{self, AwaitTrace, DumpOutcome, Frame, Registry, Symbolizer, TaskRecord};
use crate::{component, Error};

/// The component of a thread spawned without a name from the check's thread.
const UNNAMED_THREAD: &str = "unnamed thread";

/// Worker and blocking threads of a runtime built by leakcheck carry this name.
pub const RUNTIME_THREAD_NAME: &str = "leakcheck-rt";

const BACKOFF_START: Duration = Duration::from_micros(50);
const BACKOFF_CAP: Duration = Duration::from_millis(5);

/// How long a checkpoint waits for a multi-thread runtime's workers to park (tasks that keep
/// workers busy make it wait this long; a checkpoint is never slower).
const CHECKPOINT_SETTLE: Duration = Duration::from_millis(50);

/// A checkpoint reads its counts again after this long, until two readings agree: a client
/// that is still opening connections or starting threads is recorded once it has settled.
const CHECKPOINT_STABLE_GAP: Duration = Duration::from_millis(20);

/// At most this long is spent waiting for a checkpoint's counts to agree.
const CHECKPOINT_STABLE_LIMIT: Duration = Duration::from_secs(1);

/// At most this many tasks per spawn site get a resolved await trace (resolution is costly).
const AWAIT_TRACES_PER_SITE: usize = 4;

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
struct ProcessState {
    threads: Vec<process::Thread>,
    fds: Vec<process::Fd>,
    children: Vec<process::Child>,
}

impl ProcessState {
    fn read(kinds: &Kinds) -> Self {
        Self {
            threads: if kinds.threads {
                process::threads()
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
        }
    }
}

/// Live counts per (kind, component).
type Counts = BTreeMap<(Kind, String), usize>;

struct Baseline {
    /// `process::boot_ticks()` at the baseline: anything that started before is not new.
    ticks: u64,
    tasks: FxHashSet<Id>,
    task_count: usize,
    threads: HashSet<(i32, u64)>,
    fds: HashSet<(i32, String)>,
    children: HashSet<(i32, u64)>,
}

impl Baseline {
    /// Whether a thread or child (`id`, start time) existed at the baseline: listed then, or
    /// started before it (a listing of `/proc` can miss an entry; a start time cannot lie).
    fn had(&self, listed: &HashSet<(i32, u64)>, id: i32, start: u64) -> bool {
        start < self.ticks || listed.contains(&(id, start))
    }
}

/// A running leak check. See the [module docs](self).
pub struct Check {
    label: Option<String>,
    settle: Duration,
    dump_timeout: Duration,
    shutdown_timeout: Duration,
    kinds: Kinds,
    rules: RuleSet,
    runtime: Option<tokio::runtime::Runtime>,
    registry: Option<Arc<Registry>>,
    baseline: Baseline,
    checkpoints: Mutex<Vec<(String, Counts)>>,
    components: Mutex<FxHashMap<usize, Arc<str>>>,
    symbols: Mutex<Symbolizer>,
    notes: Vec<Note>,
    mode: Mode,
    report_dir: ReportDir,
    hold: Duration,
    /// Names of this test binary's tests when running under parallel libtest.
    test_names: Option<&'static HashSet<String>>,
    own_tid: i32,
    /// This thread's name: a thread spawned without a name inherits it.
    own_name: String,
    /// The main thread's name: libtest's new test threads carry it until they rename.
    main_name: String,
    _turn: Turn,
}

impl Check {
    /// A builder with every setting at its default (nothing read from the environment).
    pub fn builder() -> CheckBuilder {
        CheckBuilder::default()
    }

    pub(crate) fn start(cfg: CheckBuilder, spec: RuntimeSpec) -> Result<Check, Error> {
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
        let turn = Turn::acquire(kinds.any_process());
        let test_names = if kinds.threads && cfg.in_leak_test {
            process::sibling_test_names()
        } else {
            None
        };
        if kinds.any_process() && !matches!(spec, RuntimeSpec::None) {
            warm_up_tokio_globals();
        }
        // The baseline comes before the runtime exists, so its threads and descriptors are
        // checked too: they must be gone once it shuts down.
        let ticks = process::boot_ticks();
        let state = ProcessState::read(&kinds);

        let mut registry = None;
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
                if !custom {
                    b.thread_name(RUNTIME_THREAD_NAME).enable_all();
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
            threads: state.threads.iter().map(|t| (t.tid, t.start)).collect(),
            fds: state.fds.iter().map(|f| (f.fd, f.target.clone())).collect(),
            children: state.children.iter().map(|c| (c.pid, c.start)).collect(),
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
            symbols: Mutex::new(Symbolizer::default()),
            notes,
            mode: cfg.mode,
            report_dir: cfg.report_dir,
            hold: cfg.hold,
            test_names,
            own_tid: process::current_tid(),
            own_name: process::stat(&format!("/proc/self/task/{}/stat", process::current_tid()))
                .map(|s| s.comm)
                .unwrap_or_default(),
            main_name: process::stat("/proc/self/stat")
                .map(|s| s.comm)
                .unwrap_or_default(),
            _turn: turn,
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

    pub(crate) fn runtime_ref(&self) -> &tokio::runtime::Runtime {
        self.runtime()
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("this check has no runtime: start it with start_current_thread, start_multi_thread or start_with")
    }

    /// Records the live count of every kind per component under `name`, for the lifecycle table.
    ///
    /// A task whose `JoinHandle` just resolved may still be finishing on a worker thread (tokio
    /// wakes the handle before the task's terminate hook runs), so on a multi-thread runtime the
    /// counts are taken once every worker is parked (waiting at most [`CHECKPOINT_SETTLE`]).
    /// They are then read again every [`CHECKPOINT_STABLE_GAP`] until two readings agree (for at
    /// most [`CHECKPOINT_STABLE_LIMIT`]), so that a client still connecting is recorded settled.
    pub fn checkpoint(&self, name: impl Into<String>) {
        if self.kinds.tasks {
            if let Some(rt) = &self.runtime {
                wait_for_parked_workers(rt, CHECKPOINT_SETTLE);
            }
        }
        let read = || self.counts_with(&ProcessState::read(&self.kinds));
        let mut counts = read();
        let deadline = Instant::now() + CHECKPOINT_STABLE_LIMIT;
        while Instant::now() < deadline {
            std::thread::sleep(CHECKPOINT_STABLE_GAP);
            let again = read();
            if again == counts {
                break;
            }
            counts = again;
        }
        lock(&self.checkpoints).push((name.into(), counts));
    }

    fn counts_with(&self, state: &ProcessState) -> Counts {
        let ProcessState {
            threads,
            fds,
            children,
        } = state;
        let mut c = Counts::new();
        if self.kinds.tasks {
            match &self.registry {
                Some(reg) => {
                    for (_, rec) in reg.snapshot() {
                        *c.entry((Kind::Task, self.task_component(&rec).to_string()))
                            .or_default() += 1;
                    }
                }
                None => {
                    if let Some(rt) = &self.runtime {
                        *c.entry((Kind::Task, "(unidentified)".into())).or_default() +=
                            rt.metrics().num_alive_tasks();
                    }
                }
            }
        }
        let waiting = Turn::waiting();
        for t in threads.iter().filter(|t| {
            t.tid != self.own_tid && !waiting.contains(&t.tid) && !self.is_test_thread(t)
        }) {
            *c.entry((Kind::Thread, self.thread_component(t)))
                .or_default() += 1;
        }
        for f in fds {
            *c.entry((Kind::Fd, f.kind())).or_default() += 1;
        }
        for ch in children {
            *c.entry((Kind::Child, component::of_cmdline(&ch.cmdline)))
                .or_default() += 1;
        }
        c
    }

    /// When an unknown process-wide survivor is found while other (unchecked) tests run in
    /// this process, says that it may be theirs.
    fn parallel_tests_note(&self, found: &[Survivor], state: &ProcessState) -> Option<Note> {
        if !found.iter().any(|s| s.status == Status::Unknown) {
            return None;
        }
        let waiting = Turn::waiting();
        let others: Vec<&str> = state
            .threads
            .iter()
            .filter(|t| {
                t.tid != self.own_tid && !waiting.contains(&t.tid) && self.is_test_thread(t)
            })
            .map(|t| t.name.as_str())
            .collect();
        if others.is_empty() {
            return None;
        }
        Some(Note {
            kind: None,
            message: format!(
                "{} other test(s) ran in parallel in this process ({}): a descriptor, thread or child process they created meanwhile is reported here as if this test had; run under cargo nextest (one process per test) or with --test-threads=1 to rule that out",
                others.len(),
                others.join(", ")
            ),
        })
    }

    /// A thread of another test: named after a test of this binary, but not after this one (a
    /// thread this test spawned without a name carries this test's name), or one libtest just
    /// started (it has the main thread's name until it takes its test's).
    fn is_test_thread(&self, t: &process::Thread) -> bool {
        let Some(names) = self.test_names else {
            return false;
        };
        let starting = t.name == self.main_name && t.tid as u32 != std::process::id();
        t.name != self.own_name && (starting || names.contains(&t.name))
    }

    /// Whether `t` is a thread spawned without a name from this check's thread.
    fn is_unnamed_child_thread(&self, t: &process::Thread) -> bool {
        t.tid != self.own_tid && !self.own_name.is_empty() && t.name == self.own_name
    }

    fn thread_component(&self, t: &process::Thread) -> String {
        if self.is_unnamed_child_thread(t) {
            UNNAMED_THREAD.into()
        } else {
            component::of_thread(&t.name)
        }
    }

    fn task_component(&self, rec: &TaskRecord) -> Arc<str> {
        let key = rec.location as *const _ as usize;
        lock(&self.components)
            .entry(key)
            .or_insert_with(|| component::of_path(rec.location.file()).into())
            .clone()
    }

    /// Finishes as a test does: [`finish`](Self::finish), then writes the JSON report to the
    /// report directory (see [`CheckBuilder::report_dir`]), then, on an unknown survivor, panics
    /// with the text report ([`Mode::Fail`]) or prints it to stderr ([`Mode::Warn`]).
    ///
    /// This is what `#[leak_test]` does after the test body.
    pub fn finish_test(self) -> Report {
        let (report, mode) = self.finish_and_write();
        judge(&report, mode);
        report
    }

    /// [`finish`](Self::finish), then the JSON report; the mode is returned for [`judge`].
    pub(crate) fn finish_and_write(mut self) -> (Report, Mode) {
        let report = self.conclude();
        // Written before the check ends its turn: the next check must not see this file open.
        crate::report::write_json(&report, &self.report_dir);
        (report, self.mode)
    }

    /// Settles, classifies and reports. Tasks are checked while the runtime still runs (so their
    /// await traces can be dumped); then the runtime is shut down within the shutdown timeout and
    /// threads, descriptors and children are checked.
    pub fn finish(mut self) -> Report {
        self.conclude()
    }

    fn conclude(&mut self) -> Report {
        let mut notes = std::mem::take(&mut self.notes);
        let mut lingered = Vec::new();
        let mut stats = SettleStats {
            deadline_ms: ms(self.settle),
            ..Default::default()
        };
        let mut survivors = Vec::new();
        let start = Instant::now();

        if self.kinds.tasks {
            survivors.extend(self.settle_tasks(start, &mut stats, &mut lingered, &mut notes));
        }
        let held = self.hold_on_leak(&survivors);
        let task_counts = self
            .kinds
            .tasks
            .then(|| self.counts_with(&ProcessState::default()));
        if let Some(rt) = self.runtime.take() {
            let t = Instant::now();
            rt.shutdown_timeout(self.shutdown_timeout);
            if t.elapsed() >= self.shutdown_timeout {
                notes.push(Note {
                    kind: Some(Kind::Thread),
                    message: format!(
                        "the runtime did not shut down within {} ms: a blocking task (spawn_blocking or block_in_place) is still running; its thread is reported",
                        self.shutdown_timeout.as_millis()
                    ),
                });
            }
        }
        let mut last_state = ProcessState::default();
        if self.kinds.any_process() {
            let (found, state) = self.settle_process(&mut stats, &mut lingered);
            if !held {
                self.hold_on_leak(&found);
            }
            if let Some(note) = self.parallel_tests_note(&found, &state) {
                notes.push(note);
            }
            survivors.extend(found);
            last_state = state;
        }
        stats.elapsed_ms = ms(start.elapsed());

        // Lifecycle: the checkpoints, then the end state.
        let mut fin = self.counts_with(&last_state);
        if let Some(tc) = task_counts {
            fin.extend(tc);
        }
        let lifecycle = lifecycle(&lock(&self.checkpoints), fin);

        survivors.sort_by(|a, b| {
            (
                a.status != Status::Unknown,
                a.kind,
                &a.component,
                &a.description,
            )
                .cmp(&(
                    b.status != Status::Unknown,
                    b.kind,
                    &b.component,
                    &b.description,
                ))
        });
        let clean = !survivors.iter().any(|s| s.status == Status::Unknown);
        if stats.timed_out && clean {
            stats.timed_out = false;
        }
        Report {
            schema_version: SCHEMA_VERSION,
            label: self.label.clone(),
            clean,
            kinds: self.kinds.list(),
            survivors,
            lingered,
            settle: stats,
            lifecycle,
            notes,
        }
    }

    /// Keeps the process alive for the configured hold when `found` has an unknown survivor;
    /// says whether it did.
    fn hold_on_leak(&self, found: &[Survivor]) -> bool {
        let unknown = found.iter().filter(|s| s.status == Status::Unknown).count();
        if self.hold.is_zero() || unknown == 0 {
            return false;
        }
        eprintln!(
            "leakcheck: {unknown} unknown survivor(s) in `{}`: holding pid {} for {} s before shutting down; attach tokio-console or a debugger now",
            self.label.as_deref().unwrap_or("check"),
            std::process::id(),
            self.hold.as_secs()
        );
        std::thread::sleep(self.hold);
        true
    }

    fn settle_tasks(
        &self,
        start: Instant,
        stats: &mut SettleStats,
        lingered: &mut Vec<Lingered>,
        notes: &mut Vec<Note>,
    ) -> Vec<Survivor> {
        let Some(rt) = &self.runtime else {
            return Vec::new();
        };
        let Some(reg) = &self.registry else {
            return self.settle_task_count(rt, start, stats);
        };
        let deadline = start + self.settle;
        let mut first: Option<Vec<(Id, TaskRecord)>> = None;
        let mut gone_at: FxHashMap<Id, Duration> = FxHashMap::default();
        // Nobody drives a current-thread runtime once the body returned: settling must, or an
        // aborted task would never get to exit.
        let drive = rt.handle().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
        let mut backoff = BACKOFF_START;
        let survivors = loop {
            stats.rounds += 1;
            let seen = reg.terminations();
            let (live, unknown) = self.task_round(reg);
            match &first {
                None => first = Some(live.clone()),
                Some(f) => {
                    let alive: FxHashSet<Id> = live.iter().map(|(id, _)| *id).collect();
                    for (id, _) in f {
                        if !alive.contains(id) {
                            gone_at.entry(*id).or_insert_with(|| start.elapsed());
                        }
                    }
                }
            }
            let now = Instant::now();
            if !unknown || now >= deadline {
                stats.timed_out = unknown;
                break live;
            }
            if drive {
                rt.block_on(async {
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                    }
                });
                if reg.terminations() == seen {
                    reg.wait_for_termination(seen, backoff.min(deadline - now));
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            } else {
                // Event-driven: the terminate hook wakes us.
                reg.wait_for_termination(seen, deadline - now);
            }
        };
        for (id, rec) in first.unwrap_or_default() {
            if let Some(after) = gone_at.get(&id) {
                // No symbols for tasks that exited: the spawn site says enough.
                let l = rec.location;
                lingered.push(Lingered {
                    kind: Kind::Task,
                    component: self.task_component(&rec).to_string(),
                    description: format!(
                        "task spawned at {}:{}:{}",
                        l.file(),
                        l.line(),
                        l.column()
                    ),
                    exited_after_ms: ms(*after),
                });
            }
        }
        if survivors.is_empty() {
            return Vec::new();
        }
        // Await traces for a few tasks per spawn site.
        let mut per_site: HashMap<usize, usize> = HashMap::new();
        let wanted: FxHashSet<Id> = survivors
            .iter()
            .filter(|(_, rec)| {
                let n = per_site
                    .entry(rec.location as *const _ as usize)
                    .or_default();
                *n += 1;
                *n <= AWAIT_TRACES_PER_SITE
            })
            .map(|(id, _)| *id)
            .collect();
        let traces = match tasks::dump(rt, &wanted, self.dump_timeout) {
            DumpOutcome::Done(traces) => traces,
            DumpOutcome::TimedOut(t) => {
                notes.push(Note {
                    kind: Some(Kind::Task),
                    message: format!(
                        "the task dump did not finish within {:.0} ms (a worker thread is blocked?): survivors are shown without await traces",
                        ms(t)
                    ),
                });
                FxHashMap::default()
            }
            DumpOutcome::Unsupported(why) => {
                notes.push(Note {
                    kind: Some(Kind::Task),
                    message: why.into(),
                });
                FxHashMap::default()
            }
        };
        if survivors.len() > wanted.len() {
            notes.push(Note {
                kind: Some(Kind::Task),
                message: format!(
                    "await traces are shown for up to {AWAIT_TRACES_PER_SITE} tasks per spawn site ({} of {} survivors)",
                    wanted.len(),
                    survivors.len()
                ),
            });
        }
        survivors
            .iter()
            .map(|(id, rec)| self.task_survivor(reg, *id, rec, traces.get(id).cloned()))
            .collect()
    }

    fn settle_task_count(
        &self,
        rt: &tokio::runtime::Runtime,
        start: Instant,
        stats: &mut SettleStats,
    ) -> Vec<Survivor> {
        let deadline = start + self.settle;
        let mut backoff = BACKOFF_START;
        loop {
            stats.rounds += 1;
            let extra = rt
                .metrics()
                .num_alive_tasks()
                .saturating_sub(self.baseline.task_count);
            let now = Instant::now();
            if extra == 0 || now >= deadline {
                stats.timed_out = extra > 0;
                return (0..extra)
                    .map(|i| Survivor {
                        kind: Kind::Task,
                        id: format!("?{i}"),
                        component: "(unidentified)".into(),
                        status: self.classify(&Subject { kind: Kind::Task, component: "(unidentified)", ..Default::default() }),
                        description: "a task of the checked runtime (no spawn site without --cfg tokio_unstable)".into(),
                        spawn_location: None,
                        name: None,
                        parent: None,
                        user_frame: None,
                        backtrace: Vec::new(),
                        await_trace: None,
                        age_ms: None,
                    })
                    .collect();
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    pub(crate) fn bench_task_round(&self) -> (usize, bool) {
        match &self.registry {
            Some(reg) => {
                let (live, unknown) = self.task_round(reg);
                (live.len(), unknown)
            }
            None => (0, false),
        }
    }

    /// One settling round: the tasks created since the baseline that are alive, and whether any
    /// of them is unknown (rules are only evaluated while none is found).
    fn task_round(&self, reg: &Registry) -> (Vec<(Id, TaskRecord)>, bool) {
        let live = reg.snapshot_except(&self.baseline.tasks);
        let unknown = !live.is_empty()
            && (self.rules.is_empty()
                || live.iter().any(|(id, rec)| {
                    self.task_survivor(reg, *id, rec, None).status == Status::Unknown
                }));
        (live, unknown)
    }

    fn task_survivor(
        &self,
        reg: &Registry,
        id: Id,
        rec: &TaskRecord,
        await_trace: Option<AwaitTrace>,
    ) -> Survivor {
        let frames: Vec<Frame> = rec
            .frames
            .as_deref()
            .map(|ips| lock(&self.symbols).resolve(ips))
            .unwrap_or_default();
        let user: Vec<Frame> = frames.into_iter().filter(|f| !f.is_runtime()).collect();
        let mut component = self.task_component(rec).to_string();
        if component == "tokio" || component == "std" {
            if let Some(f) = user.first() {
                component = component::of_function(&f.function);
            }
        }
        let location = location(rec);
        let status = self.classify(&Subject {
            kind: Kind::Task,
            component: &component,
            spawn_location: Some(&location),
            frames: &user,
            await_trace: await_trace.as_ref(),
            task_name: rec.name.as_deref(),
            ..Default::default()
        });
        let age = reg.epoch() + Duration::from_nanos(rec.spawned_ns);
        Survivor {
            kind: Kind::Task,
            id: id.to_string(),
            component,
            status,
            description: format!("task spawned at {location}"),
            spawn_location: Some(location),
            name: rec.name.as_deref().map(str::to_string),
            parent: rec.parent.map(|p| p.to_string()),
            user_frame: user.first().cloned(),
            backtrace: user,
            await_trace,
            age_ms: Some(ms(age.elapsed())),
        }
    }

    fn classify(&self, s: &Subject<'_>) -> Status {
        match self.rules.first_match(s) {
            Some(r) => Status::Known {
                rule: r.name().to_string(),
                reason: r.reason().to_string(),
                origin: r.origin().map(str::to_string),
            },
            None => Status::Unknown,
        }
    }

    fn process_survivors(
        &self,
        state: &ProcessState,
        waiting: &HashSet<i32>,
        excluded: &mut usize,
        test_threads: &mut usize,
    ) -> Vec<(String, Survivor)> {
        let mut out = Vec::new();
        if self.kinds.threads {
            for t in &state.threads {
                // The thread running the check is never its leak.
                if t.tid == self.own_tid
                    || self.baseline.had(&self.baseline.threads, t.tid, t.start)
                {
                    continue;
                }
                if waiting.contains(&t.tid) {
                    *excluded += 1;
                    continue;
                }
                if self.is_test_thread(t) {
                    *test_threads += 1;
                    continue;
                }
                let component = self.thread_component(t);
                let status = self.classify(&Subject {
                    kind: Kind::Thread,
                    component: &component,
                    thread_name: Some(&t.name),
                    ..Default::default()
                });
                let mut description = format!("thread `{}`", t.name);
                if t.name == RUNTIME_THREAD_NAME {
                    description.push_str(" (outlived the runtime's shutdown: a stuck spawn_blocking or block_in_place?)");
                } else if self.is_unnamed_child_thread(t) {
                    description.push_str(" (spawned without a name: it carries the name of the thread that spawned it, this test's)");
                }
                out.push((
                    format!("t{}:{}", t.tid, t.start),
                    Survivor::process(
                        Kind::Thread,
                        t.tid.to_string(),
                        component,
                        status,
                        description,
                        Some(t.name.clone()),
                    ),
                ));
            }
        }
        if self.kinds.fds {
            let fds = state
                .fds
                .iter()
                .filter(|f| !self.baseline.fds.contains(&(f.fd, f.target.clone())));
            {
                for f in fds {
                    let component = f.kind();
                    let target = f.describe();
                    let status = self.classify(&Subject {
                        kind: Kind::Fd,
                        component: &component,
                        fd_target: Some(&target),
                        ..Default::default()
                    });
                    out.push((
                        format!("f{}:{}", f.fd, f.target),
                        Survivor::process(
                            Kind::Fd,
                            f.fd.to_string(),
                            component,
                            status,
                            target,
                            None,
                        ),
                    ));
                }
            }
        }
        if self.kinds.children {
            for c in &state.children {
                if self.baseline.had(&self.baseline.children, c.pid, c.start) {
                    continue;
                }
                let component = component::of_cmdline(&c.cmdline);
                let status = self.classify(&Subject {
                    kind: Kind::Child,
                    component: &component,
                    child_cmdline: Some(&c.cmdline),
                    ..Default::default()
                });
                let description = if c.state == 'Z' {
                    format!("{} (exited, never waited for)", c.cmdline)
                } else {
                    c.cmdline.clone()
                };
                out.push((
                    format!("c{}:{}", c.pid, c.start),
                    Survivor::process(
                        Kind::Child,
                        c.pid.to_string(),
                        component,
                        status,
                        description,
                        None,
                    ),
                ));
            }
        }
        out
    }

    fn settle_process(
        &self,
        stats: &mut SettleStats,
        lingered: &mut Vec<Lingered>,
    ) -> (Vec<Survivor>, ProcessState) {
        let start = Instant::now();
        let deadline = start + self.settle;
        let mut backoff = BACKOFF_START;
        let mut first: Option<HashMap<String, Survivor>> = None;
        let mut gone_at: HashMap<String, Duration> = HashMap::new();
        let mut excluded;
        let mut test_threads;
        let (survivors, state) = loop {
            stats.rounds += 1;
            excluded = 0;
            test_threads = 0;
            let waiting = Turn::waiting();
            let state = ProcessState::read(&self.kinds);
            let now_list =
                self.process_survivors(&state, &waiting, &mut excluded, &mut test_threads);
            match &first {
                None => first = Some(now_list.iter().cloned().collect()),
                Some(f) => {
                    let alive: HashSet<&String> = now_list.iter().map(|(k, _)| k).collect();
                    for k in f.keys() {
                        if !alive.contains(k) {
                            gone_at.entry(k.clone()).or_insert_with(|| start.elapsed());
                        }
                    }
                }
            }
            let unknown = now_list.iter().any(|(_, s)| s.status == Status::Unknown);
            let now = Instant::now();
            if !unknown || now >= deadline {
                if unknown {
                    stats.timed_out = true;
                }
                break (now_list, state);
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_CAP);
        };
        if let Some(first) = first {
            for (k, after) in gone_at {
                if let Some(s) = first.get(&k) {
                    let description = if s.name.as_deref() == Some(RUNTIME_THREAD_NAME) {
                        format!(
                            "thread `{RUNTIME_THREAD_NAME}` (exiting after the runtime's shutdown)"
                        )
                    } else {
                        s.description.clone()
                    };
                    lingered.push(Lingered {
                        kind: s.kind,
                        component: s.component.clone(),
                        description,
                        exited_after_ms: ms(after),
                    });
                }
            }
        }
        stats.waiting_threads = excluded;
        stats.test_threads = test_threads;
        (survivors.into_iter().map(|(_, s)| s).collect(), state)
    }
}

impl Survivor {
    fn process(
        kind: Kind,
        id: String,
        component: String,
        status: Status,
        description: String,
        name: Option<String>,
    ) -> Self {
        Survivor {
            kind,
            id,
            component,
            status,
            description,
            spawn_location: None,
            name,
            parent: None,
            user_frame: None,
            backtrace: Vec::new(),
            await_trace: None,
            age_ms: None,
        }
    }
}

/// Fails (panics with the text report) or warns (prints it) when `report` has an unknown
/// survivor.
pub(crate) fn judge(report: &Report, mode: Mode) {
    if !report.is_clean() {
        match mode {
            Mode::Warn => eprintln!("{}", report.to_text()),
            _ => panic!("{}", report.to_text()),
        }
    }
}

fn lifecycle(checkpoints: &[(String, Counts)], fin: Counts) -> Lifecycle {
    let mut columns: Vec<String> = checkpoints.iter().map(|(n, _)| n.clone()).collect();
    columns.push("final".into());
    let all: Vec<&Counts> = checkpoints
        .iter()
        .map(|(_, c)| c)
        .chain(std::iter::once(&fin))
        .collect();
    let mut keys: Vec<&(Kind, String)> = all.iter().flat_map(|c| c.keys()).collect();
    keys.sort();
    keys.dedup();
    let rows = keys
        .into_iter()
        .map(|k| LifecycleRow {
            kind: k.0,
            component: k.1.clone(),
            counts: all.iter().map(|c| c.get(k).copied().unwrap_or(0)).collect(),
        })
        .collect();
    Lifecycle { columns, rows }
}

/// `file:line:column` of a task's spawn.
fn location(rec: &TaskRecord) -> String {
    let l = rec.location;
    format!("{}:{}:{}", l.file(), l.line(), l.column())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (with a backoff, at most `limit`) until every worker of a multi-thread runtime is
/// parked: then no task is between its completion and its terminate hook.
fn wait_for_parked_workers(rt: &tokio::runtime::Runtime, limit: Duration) {
    if rt.handle().runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        // Tasks of a current-thread runtime finish on the thread that takes the checkpoint.
        return;
    }
    let m = rt.metrics();
    // An odd park/unpark count means the worker is parked.
    poll_until(limit, || {
        (0..m.num_workers()).all(|w| m.worker_park_unpark_count(w) % 2 == 1)
    });
}

/// Polls `done` with the settle backoff (50 µs doubling to 5 ms) until it holds or `limit`
/// passes.
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut backoff = BACKOFF_START;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
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

/// Checks take turns within a process: a check of process-wide kinds runs alone (it would
/// otherwise blame another check's runtime threads and descriptors on its own test); checks of
/// tasks only run side by side. Threads waiting for a turn are known to leakcheck and are not
/// blamed on the running check.
struct Turn {
    exclusive: bool,
}

#[derive(Default)]
struct Turns {
    exclusive: bool,
    shared: usize,
    /// Exclusive checks waiting: shared ones queue behind them so they are not starved.
    exclusive_waiting: usize,
}

static TURNS: (Mutex<Turns>, Condvar) = (
    Mutex::new(Turns {
        exclusive: false,
        shared: 0,
        exclusive_waiting: 0,
    }),
    Condvar::new(),
);
static WAITING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

thread_local! {
    /// Whether this thread holds a turn: a second check on it would wait for itself.
    static HOLDS_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Turn {
    fn acquire(exclusive: bool) -> Turn {
        assert!(
            !HOLDS_TURN.get(),
            "a leak check is already running on this thread: finish it before starting another (a #[leak_test] function cannot be called from inside another leak check)"
        );
        let tid = process::current_tid();
        lock(&WAITING).push(tid);
        let mut t = lock(&TURNS.0);
        if exclusive {
            t.exclusive_waiting += 1;
            while t.exclusive || t.shared > 0 {
                t = TURNS.1.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            t.exclusive_waiting -= 1;
            t.exclusive = true;
        } else {
            while t.exclusive || t.exclusive_waiting > 0 {
                t = TURNS.1.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            t.shared += 1;
        }
        drop(t);
        lock(&WAITING).retain(|w| *w != tid);
        HOLDS_TURN.set(true);
        Turn { exclusive }
    }

    fn waiting() -> HashSet<i32> {
        lock(&WAITING).iter().copied().collect()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        HOLDS_TURN.set(false);
        let mut t = lock(&TURNS.0);
        if self.exclusive {
            t.exclusive = false;
        } else {
            t.shared -= 1;
        }
        drop(t);
        TURNS.1.notify_all();
    }
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
    tasks::with_name(name, f)
}
