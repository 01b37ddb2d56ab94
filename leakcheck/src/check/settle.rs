//! Settling: waiting, event-driven with a bounded backoff, until nothing unknown is left or the
//! deadline passes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::task::Id;

use super::start::{ms, Check, ProcessState, RUNTIME_THREAD_NAME};
use super::turns::Turn;
use crate::report::{Kind, Lingered, Note, SettleStats, Status, Survivor};
use crate::rules::Subject;
use crate::tasks::{self, DumpOutcome, Registry, TaskRecord};

pub(super) const BACKOFF_START: Duration = Duration::from_micros(50);
pub(super) const BACKOFF_CAP: Duration = Duration::from_millis(5);

/// At most this many tasks per spawn site get a resolved await trace (resolution is costly).
const AWAIT_TRACES_PER_SITE: usize = 4;

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

    pub(super) fn settle_process(
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
