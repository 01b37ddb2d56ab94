//! Checkpoints and the lifecycle table: counts per kind and component at each stage.

use std::time::{Duration, Instant};

use super::settle::poll_until;
use super::start::{lock, Check, Counts, ProcessState};
use super::turns::Turn;
use crate::process;
use crate::report::{Kind, Lifecycle, LifecycleRow};

/// How long a checkpoint waits for a multi-thread runtime's workers to park (tasks that keep
/// workers busy make it wait this long; a checkpoint is never slower).
const CHECKPOINT_SETTLE: Duration = Duration::from_millis(50);

/// A checkpoint reads its counts again after this long, until two readings agree: a client
/// that is still opening connections or starting threads is recorded once it has settled.
const CHECKPOINT_STABLE_GAP: Duration = Duration::from_millis(20);

/// At most this long is spent waiting for a checkpoint's counts to agree.
const CHECKPOINT_STABLE_LIMIT: Duration = Duration::from_secs(1);

impl Check {
    /// Records the live count of every kind per component under `name`, for the lifecycle table.
    ///
    /// A task whose `JoinHandle` just resolved may still be finishing on a worker thread (tokio
    /// wakes the handle before the task's terminate hook runs), so on a multi-thread runtime the
    /// counts are taken once every worker is parked (waiting at most 50 ms). They are then read
    /// again every 20 ms until two readings agree (for at most 1 s), so that a client still
    /// connecting is recorded settled.
    pub fn checkpoint(&self, name: impl Into<String>) {
        if self.kinds.tasks {
            if let Some(rt) = &self.runtime {
                wait_for_parked_workers(rt, CHECKPOINT_SETTLE);
            }
        }
        let read = || {
            let waiting = Turn::waiting();
            self.counts_with(&ProcessState::read(&self.kinds, self.unread(&waiting)))
        };
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

    pub(super) fn counts_with(&self, state: &ProcessState) -> Counts {
        let ProcessState {
            threads,
            fds,
            children,
            ..
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
                        *c.entry((Kind::Task, super::settle::UNIDENTIFIED.into()))
                            .or_default() += rt.metrics().num_alive_tasks();
                    }
                }
            }
        }
        let waiting = Turn::waiting();
        for t in threads.iter().filter(|t| {
            t.tid != self.own_tid
                && !process::is_own(t)
                && !waiting.contains(&t.tid)
                && !self.is_test_thread(t)
        }) {
            *c.entry((Kind::Thread, self.thread_component(t)))
                .or_default() += 1;
        }
        for f in fds
            .iter()
            .filter(|f| !self.opened_by_other_test(f, threads))
        {
            *c.entry((Kind::Fd, self.fd_view(f).0)).or_default() += 1;
        }
        let others = self.other_tests_children(children);
        for ch in children.iter().filter(|ch| !others.contains(&ch.pid)) {
            *c.entry((Kind::Child, self.baseline.child_component(ch)))
                .or_default() += 1;
        }
        c
    }
}

pub(super) fn lifecycle(checkpoints: &[(String, Counts)], fin: Counts) -> Lifecycle {
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

/// Waits (with a backoff, at most `limit`) until every worker of a multi-thread runtime is
/// parked: then no task is between its completion and its terminate hook.
pub(super) fn wait_for_parked_workers(rt: &tokio::runtime::Runtime, limit: Duration) {
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
