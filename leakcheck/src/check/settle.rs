//! Settling: waiting, event-driven with a bounded backoff, until nothing unknown is left or the
//! deadline passes.
//!
//! A failing check pays one deadline: while it waits, the survivors' spawn stacks are resolved
//! on a thread of leakcheck's own, since the first resolution of a process loads debug info and
//! would otherwise come after the wait.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::task::Id;

use super::classify::Uncounted;
use super::lifecycle::wait_for_parked_workers;
use super::start::{ms, Check, ProcessState, RUNTIME_COMPONENT, RUNTIME_THREAD_NAME};
use super::turns::Turn;
use crate::report::{Kind, Lingered, Note, SettleStats, Status, Survivor};
use crate::rules::Subject;
use crate::tasks::{self, AwaitTrace, DumpOutcome, Registry, TaskRecord};

pub(super) const BACKOFF_START: Duration = Duration::from_micros(50);
pub(super) const BACKOFF_CAP: Duration = Duration::from_millis(5);

/// The least time threads, descriptors and children get to settle after the runtime's shutdown,
/// when settling tasks used the whole deadline.
const PROCESS_GRACE: Duration = Duration::from_millis(20);

/// The component of tasks counted but not identified (no `tokio_unstable`).
pub(super) const UNIDENTIFIED: &str = "(unidentified)";

/// At most this many tasks per spawn site get a resolved await trace (resolution is costly).
const AWAIT_TRACES_PER_SITE: usize = 16;

/// At most this many tasks are dumped per settling round for rules that match await points.
const AWAIT_RULE_DUMP_LIMIT: usize = 256;

/// How long a dump for await-point rules waits for the workers to park.
const DUMP_WAITS_FOR_WORKERS: Duration = Duration::from_millis(50);

impl Check {
    pub(super) fn settle_tasks(
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
        // Driving it sleeps on its clock: a paused clock auto-advances, so a task a few virtual
        // milliseconds from its end gets there; the deadline bounds virtual time as well.
        let virtual_start = drive.then(|| rt.block_on(async { tokio::time::Instant::now() }));
        let mut backoff = BACKOFF_START;
        // Await traces taken while settling, when a rule matches await points: a survivor such
        // a rule allows is known at once, not after the deadline.
        let await_rules = self.rules.uses_await_point();
        let mut traces: FxHashMap<Id, AwaitTrace> = FxHashMap::default();
        let mut dumps_work = true;
        // Survivors' symbols, resolved while waiting (see `prefetch_after`).
        let mut prefetch = None;
        let mut prefetched = false;
        let survivors = loop {
            stats.rounds += 1;
            let seen = reg.terminations();
            let (mut live, mut unknown) = self.task_round(reg, &traces);
            if unknown && await_rules && dumps_work {
                // A task whose JoinHandle just resolved may still be finishing on a worker (tokio
                // wakes the handle before the terminate hook runs), and a dump taken then can hold
                // its end back until the runtime shuts down: dump once the workers are idle.
                wait_for_parked_workers(rt, DUMP_WAITS_FOR_WORKERS);
                (live, unknown) = self.task_round(reg, &traces);
            }
            if unknown && await_rules && dumps_work {
                let missing: FxHashSet<Id> = live
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| !traces.contains_key(id))
                    .take(AWAIT_RULE_DUMP_LIMIT)
                    .collect();
                if !missing.is_empty() {
                    match tasks::dump(rt, &missing, self.dump_timeout) {
                        DumpOutcome::Done(more) => traces.extend(more),
                        _ => dumps_work = false,
                    }
                    unknown = self.any_unknown(reg, &live, &traces);
                }
            }
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
            let virtual_elapsed = virtual_start.map(|v| rt.block_on(async move { v.elapsed() }));
            if !unknown || now >= deadline || virtual_elapsed.is_some_and(|v| v >= self.settle) {
                stats.timed_out = unknown;
                break live;
            }
            // Not while dumps are taken for rules: they would wait for its lock on the unwinder
            // (and their own symbols load the debug info anyway).
            let prefetch_at = (unknown && !prefetched && !(await_rules && dumps_work))
                .then(|| start + prefetch_after(self.settle));
            if prefetch_at.is_some_and(|at| now >= at) {
                prefetched = true;
                prefetch = tasks::prefetch_symbols(
                    live.iter().filter_map(|(_, r)| r.frames.clone()).collect(),
                );
            }
            // The wait ends at the deadline, or when the prefetch is due.
            let until = prefetch_at
                .filter(|at| *at > now)
                .unwrap_or(deadline)
                .min(deadline);
            if drive {
                let step = backoff.min(until - now);
                rt.block_on(async {
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                    }
                    if reg.terminations() == seen {
                        tokio::time::sleep(step).await;
                    }
                });
                backoff = (backoff * 2).min(BACKOFF_CAP);
            } else {
                // Event-driven: the terminate hook wakes us.
                reg.wait_for_termination(seen, until - now);
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
        // Stopped before the dump (a dump's workers would wait for its lock on the unwinder):
        // the report resolves what it did not get to.
        drop(prefetch);
        if survivors.is_empty() {
            return Vec::new();
        }
        // Await traces for the first tasks of each spawn site (in spawn order: the same ones on
        // every run).
        let mut per_site: HashMap<usize, usize> = HashMap::new();
        let mut in_spawn_order: Vec<&(Id, TaskRecord)> = survivors.iter().collect();
        in_spawn_order.sort_by_key(|(id, _)| *id);
        let wanted: FxHashSet<Id> = in_spawn_order
            .into_iter()
            .filter(|(_, rec)| {
                let n = per_site
                    .entry(rec.location as *const _ as usize)
                    .or_default();
                *n += 1;
                *n <= AWAIT_TRACES_PER_SITE
            })
            .map(|(id, _)| *id)
            .collect();
        let missing: FxHashSet<Id> = wanted
            .iter()
            .filter(|id| !traces.contains_key(*id))
            .copied()
            .collect();
        let dumped = if missing.is_empty() {
            DumpOutcome::Done(FxHashMap::default())
        } else {
            tasks::dump(rt, &missing, self.dump_timeout)
        };
        let traces = match dumped {
            DumpOutcome::Done(more) => {
                traces.extend(more);
                traces
            }
            DumpOutcome::TimedOut(t) => {
                self.worker_blocked
                    .store(true, std::sync::atomic::Ordering::Relaxed);
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
                    .map(|i| {
                        let status = self.classify(&Subject {
                            kind: Kind::Task,
                            component: UNIDENTIFIED,
                            ..Default::default()
                        });
                        Survivor::plain(
                            Kind::Task,
                            format!("?{i}"),
                            UNIDENTIFIED.into(),
                            status,
                            "a task of the checked runtime (no spawn site without --cfg tokio_unstable)".into(),
                            None,
                        )
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
                let (live, unknown) = self.task_round(reg, &FxHashMap::default());
                (live.len(), unknown)
            }
            None => (0, false),
        }
    }

    /// One settling round: the tasks created since the baseline that are alive, and whether any
    /// of them is unknown (rules are only evaluated while none is found).
    fn task_round(
        &self,
        reg: &Registry,
        traces: &FxHashMap<Id, AwaitTrace>,
    ) -> (Vec<(Id, TaskRecord)>, bool) {
        let live = reg.snapshot_except(&self.baseline.tasks);
        let unknown = self.any_unknown(reg, &live, traces);
        (live, unknown)
    }

    /// Whether a rule allows none of `live` (rules are only evaluated while none is found).
    fn any_unknown(
        &self,
        reg: &Registry,
        live: &[(Id, TaskRecord)],
        traces: &FxHashMap<Id, AwaitTrace>,
    ) -> bool {
        !live.is_empty()
            && (self.rules.is_empty()
                || live.iter().any(|(id, rec)| {
                    self.task_survivor(reg, *id, rec, traces.get(id).cloned())
                        .status
                        == Status::Unknown
                }))
    }

    /// Settles threads, descriptors and children until `deadline`: the check's one deadline,
    /// which tasks may have used up already (then at least [`PROCESS_GRACE`] is given, for the
    /// runtime's own threads to exit after its shutdown).
    pub(super) fn settle_process(
        &self,
        deadline: Instant,
        stats: &mut SettleStats,
        lingered: &mut Vec<Lingered>,
    ) -> (Vec<Survivor>, ProcessState) {
        let start = Instant::now();
        let deadline = deadline.max(start + PROCESS_GRACE);
        let mut backoff = BACKOFF_START;
        // The latest reading of each survivor: one that exits during settling is listed as it
        // was last seen (a new thread takes its own name only after it starts).
        let mut seen: HashMap<String, Survivor> = HashMap::new();
        let mut gone_at: HashMap<String, Duration> = HashMap::new();
        let mut uncounted;
        let mut stale = false;
        let (survivors, state) = loop {
            stats.rounds += 1;
            uncounted = Uncounted::default();
            let waiting = Turn::waiting();
            let read_at = Instant::now();
            let state = ProcessState::read(&self.kinds, self.unread(&waiting));
            let now_list = self.process_survivors(&state, &waiting, &mut uncounted);
            let alive: HashSet<&String> = now_list.iter().map(|(k, _)| k).collect();
            for k in seen.keys() {
                if !alive.contains(k) {
                    gone_at.entry(k.clone()).or_insert_with(|| start.elapsed());
                }
            }
            for (k, s) in &now_list {
                if !gone_at.contains_key(k) {
                    seen.insert(k.clone(), s.clone());
                }
            }
            let unknown = now_list.iter().any(|(_, s)| s.status == Status::Unknown);
            let now = Instant::now();
            // The first classification of a process may load debug info for a second: a reading
            // that old is not the end state (a new thread has named itself since). Read again,
            // once; its origins are resolved by now.
            if unknown && now >= deadline && !stale && now - read_at > BACKOFF_CAP {
                stale = true;
                continue;
            }
            if !unknown || now >= deadline {
                if unknown {
                    stats.timed_out = true;
                }
                break (now_list, state);
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(BACKOFF_CAP);
        };
        {
            for (k, after) in gone_at {
                if let Some(s) = seen.get(&k) {
                    let description = if s.component == RUNTIME_COMPONENT {
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
        stats.waiting_threads = uncounted.waiting;
        stats.test_threads = uncounted.test_threads;
        stats.test_fds = uncounted.test_fds;
        stats.test_children = uncounted.test_children;
        (survivors.into_iter().map(|(_, s)| s).collect(), state)
    }
}

/// How long survivors must have lasted before their symbols are resolved while waiting. Tasks
/// merely ending (aborted, shutting down) are mostly gone by then, so a check that ends clean
/// rarely waits for the resolving thread (stopping it waits for the address in hand, and the
/// first one loads debug info). A tenth of the deadline leaves the rest for the resolution.
fn prefetch_after(settle: Duration) -> Duration {
    settle / 10
}

/// Polls `done` with the settle backoff (50 µs doubling to 5 ms) until it holds or `limit`
/// passes.
pub(super) fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut backoff = BACKOFF_START;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}
