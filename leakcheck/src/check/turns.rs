//! Turns: which checks of one process may run side by side.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::start::{lock, ProcessState};
use crate::config::Kinds;
use crate::process;

/// Checks take turns within a process: a check of process-wide kinds runs alone (it would
/// otherwise blame another check's runtime threads and descriptors on its own test); checks of
/// tasks only run side by side. Threads waiting for a turn are known to leakcheck and are not
/// blamed on the running check.
pub(super) struct Turn {
    exclusive: bool,
    /// The thread that took it: a check may be finished (and its turn dropped) on another.
    owner: ThreadId,
    /// Which turn of the process this is (they are counted from 1).
    number: u64,
}

#[derive(Default)]
struct Turns {
    exclusive: bool,
    shared: usize,
    /// Exclusive checks waiting: shared ones queue behind them so they are not starved.
    exclusive_waiting: usize,
    /// Threads asleep on the condition variable: a turn given back wakes them (a system call)
    /// only when there are some.
    parked: usize,
    /// Turns taken so far.
    taken: u64,
}

static TURNS: (Mutex<Turns>, Condvar) = (
    Mutex::new(Turns {
        exclusive: false,
        shared: 0,
        exclusive_waiting: 0,
        parked: 0,
        taken: 0,
    }),
    Condvar::new(),
);

/// Whether some turn is held, for the waiters' spin (the truth is in `TURNS`).
static BUSY: AtomicBool = AtomicBool::new(false);

/// How long a waiter yields its core before it sleeps. A trivial test's turn lasts about
/// 0.17 ms, and waking a sleeping waiter took 33 µs (median, 2-core VM): under `cargo test`,
/// where checks of process-wide kinds run one at a time, every other test paid it. Yielding
/// (not spinning) leaves the core to any other runnable thread.
const SPIN: Duration = Duration::from_micros(500);
static WAITING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The end state a check read in its exclusive turn, for the next one (see [`Turn::take_over`]).
struct Handed {
    turn: u64,
    kinds: Kinds,
    state: ProcessState,
}

static HANDED: Mutex<Option<Handed>> = Mutex::new(None);

impl Handed {
    /// Which kinds of `kinds` the thread `me` may keep from this state, with `made` the hooks'
    /// counts now, and `runner` whether the main thread is libtest's, which starts tests on
    /// threads named after them and runs none itself (see [`Turn::take_over`]).
    fn keeps(&self, kinds: &Kinds, me: i32, made: Option<process::Made>, runner: bool) -> Kinds {
        let (no_fd, no_thread) = match (self.state.made, made) {
            (Some(then), Some(now)) => {
                let listed = self.state.threads.iter().any(|t| t.tid == me);
                let by_main = runner
                    || now.threads_by_main == then.threads_by_main
                    || (now.threads_by_main == then.threads_by_main + 1 && !listed);
                (now.fds == then.fds, now.threads == then.threads && by_main)
            }
            _ => (false, false),
        };
        Kinds {
            tasks: false,
            threads: kinds.threads && self.kinds.threads && no_thread,
            fds: kinds.fds && self.kinds.fds && no_fd,
            children: false,
        }
    }
}

/// The turns each thread took and has not given back: (exclusive, shared).
static HELD: Mutex<Vec<(ThreadId, (u32, u32))>> = Mutex::new(Vec::new());

fn held(thread: ThreadId) -> (u32, u32) {
    lock(&HELD)
        .iter()
        .find(|(t, _)| *t == thread)
        .map_or((0, 0), |(_, h)| *h)
}

fn set_held(thread: ThreadId, h: (u32, u32)) {
    let mut all = lock(&HELD);
    all.retain(|(t, _)| *t != thread);
    if h != (0, 0) {
        all.push((thread, h));
    }
}

impl Turn {
    /// Takes a turn, waiting for it. On a thread that holds a turn already, checks of tasks only
    /// run side by side (each has its own runtime); any other combination would wait for itself,
    /// and panics instead.
    pub(super) fn acquire(exclusive: bool) -> Turn {
        let owner = std::thread::current().id();
        let (held_exclusive, held_shared) = held(owner);
        assert!(
            held_exclusive == 0 && (held_shared == 0 || !exclusive),
            "a leak check is already running on this thread and this one would wait for it to end: finish it before starting another (checks of tasks only may run side by side; a check of threads, descriptors or children runs alone, and a #[leak_test] function cannot be called from inside another leak check)"
        );
        if held_shared > 0 {
            // Not behind waiting exclusive checks: they wait for this thread's turn to end.
            let mut t = lock(&TURNS.0);
            t.shared += 1;
            t.taken += 1;
            let number = t.taken;
            drop(t);
            set_held(owner, (0, held_shared + 1));
            return Turn {
                exclusive,
                owner,
                number,
            };
        }
        let tid = process::current_tid();
        lock(&WAITING).push(tid);
        let mut t = lock(&TURNS.0);
        let mut spin_until = None;
        if exclusive {
            t.exclusive_waiting += 1;
            while t.exclusive || t.shared > 0 {
                t = wait(t, &mut spin_until);
            }
            t.exclusive_waiting -= 1;
            t.exclusive = true;
        } else {
            while t.exclusive || t.exclusive_waiting > 0 {
                t = wait(t, &mut spin_until);
            }
            t.shared += 1;
        }
        t.taken += 1;
        let number = t.taken;
        BUSY.store(true, Ordering::Release);
        drop(t);
        lock(&WAITING).retain(|w| *w != tid);
        set_held(owner, if exclusive { (1, 0) } else { (0, 1) });
        Turn {
            exclusive,
            owner,
            number,
        }
    }

    /// Hands the end state of this turn's check (a reading of `kinds`) to the next turn.
    pub(super) fn hand_over(&self, kinds: Kinds, state: ProcessState) {
        if self.exclusive {
            *lock(&HANDED) = Some(Handed {
                turn: self.number,
                kinds,
                state,
            });
        }
    }

    /// The end state of the previous check as this check's baseline, for each kind of `kinds`
    /// nothing can have changed since it was read. It is the end state of the check whose
    /// exclusive turn came right before this one (no check ran between), and of each kind it
    /// is kept when the hooks saw no change since (`process::made`; leakcheck's own
    /// descriptors are not counted):
    /// - descriptors: none was made or closed (one closed and one made again with its number
    ///   and target would look like the same);
    /// - threads: none was started, but by libtest's main thread (`runner`: this check runs on
    ///   a test's thread, so the main thread runs no test; the threads it starts are tests'
    ///   threads, which no check counts), or else by the main thread this one only (it was not
    ///   listed then).
    ///
    /// Children, and every kind without the hooks, are read now. Under `cargo test` this saves
    /// most of one reading of `/proc` per check.
    pub(super) fn take_over(&self, kinds: &Kinds, runner: bool) -> Option<ProcessState> {
        let handed = lock(&HANDED).take()?;
        if !self.exclusive || handed.turn + 1 != self.number {
            return None;
        }
        let kept = handed.keeps(kinds, process::current_tid(), process::made(), runner);
        if !kept.any_process() {
            return None;
        }
        let waiting = Turn::waiting();
        Some(handed.state.renewed(kinds, &kept, Some(&waiting)))
    }

    pub(super) fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    pub(super) fn waiting() -> HashSet<i32> {
        lock(&WAITING).iter().copied().collect()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (e, s) = held(self.owner);
        set_held(
            self.owner,
            if self.exclusive {
                (e.saturating_sub(1), s)
            } else {
                (e, s.saturating_sub(1))
            },
        );
        let mut t = lock(&TURNS.0);
        if self.exclusive {
            t.exclusive = false;
        } else {
            t.shared -= 1;
        }
        if !t.exclusive && t.shared == 0 {
            BUSY.store(false, Ordering::Release);
        }
        let parked = t.parked > 0;
        drop(t);
        if parked {
            TURNS.1.notify_all();
        }
    }
}

/// Waits for a change of the turns: first yielding the core until [`SPIN`] has passed since
/// the first wait (a turn given back meanwhile is taken at once), then asleep.
fn wait<'a>(
    t: std::sync::MutexGuard<'a, Turns>,
    spin_until: &mut Option<Instant>,
) -> std::sync::MutexGuard<'a, Turns> {
    let until = *spin_until.get_or_insert_with(|| Instant::now() + SPIN);
    if Instant::now() < until {
        drop(t);
        while BUSY.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::yield_now();
        }
        return lock(&TURNS.0);
    }
    let mut t = t;
    t.parked += 1;
    let mut t = TURNS.1.wait(t).unwrap_or_else(|e| e.into_inner());
    t.parked -= 1;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Kinds = Kinds {
        tasks: true,
        threads: true,
        fds: true,
        children: true,
    };

    /// The end state of a check of every kind, read when the hooks had counted 10 changes of
    /// descriptors, 5 threads started by threads other than the main one and 3 by the main
    /// one; threads 7 and 8 were listed.
    fn handed() -> Handed {
        let thread = |tid| process::Thread {
            tid,
            start: 1,
            name: String::new(),
        };
        Handed {
            turn: 1,
            kinds: ALL,
            state: ProcessState {
                threads: vec![thread(7), thread(8)],
                made: Some(made(10, 5, 3)),
                ..ProcessState::default()
            },
        }
    }

    fn made(fds: u64, threads: u64, threads_by_main: u64) -> process::Made {
        process::Made {
            fds,
            threads,
            threads_by_main,
        }
    }

    /// (threads, fds, children) kept by thread `me`.
    fn kept(me: i32, now: process::Made, runner: bool) -> (bool, bool, bool) {
        let k = handed().keeps(&ALL, me, Some(now), runner);
        (k.threads, k.fds, k.children)
    }

    #[test]
    fn threads_and_descriptors_are_kept_while_the_hooks_saw_no_change() {
        assert_eq!(kept(7, made(10, 5, 3), false), (true, true, false));
        // A descriptor made or closed meanwhile, by anyone.
        assert_eq!(kept(7, made(11, 5, 3), false), (true, false, false));
        assert_eq!(kept(7, made(11, 5, 3), true), (true, false, false));
        // A thread started meanwhile by another thread than the main one.
        assert_eq!(kept(7, made(10, 6, 3), false), (false, true, false));
        assert_eq!(kept(7, made(10, 6, 3), true), (false, true, false));
    }

    #[test]
    fn threads_the_main_thread_started_count_unless_it_is_libtest_s() {
        assert_eq!(kept(7, made(10, 5, 4), false), (false, true, false));
        assert_eq!(kept(7, made(10, 5, 9), true), (true, true, false));
        // Thread 9 was not listed: the one thread the main thread started may be this one.
        assert_eq!(kept(9, made(10, 5, 4), false), (true, true, false));
        assert_eq!(kept(9, made(10, 5, 5), false), (false, true, false));
    }

    #[test]
    fn without_the_hooks_nothing_is_kept() {
        let mut h = handed();
        h.state.made = None;
        let k = h.keeps(&ALL, 7, None, true);
        assert!(!k.any_process());
        let k = handed().keeps(&ALL, 7, None, true);
        assert!(!k.any_process());
    }

    #[test]
    fn only_kinds_both_checks_track_are_kept() {
        let mut h = handed();
        h.kinds.fds = false;
        let k = h.keeps(&ALL, 7, Some(made(10, 5, 3)), false);
        assert_eq!((k.threads, k.fds, k.children), (true, false, false));
        let threads_only = Kinds {
            fds: false,
            children: false,
            ..ALL
        };
        let k = handed().keeps(&threads_only, 7, Some(made(10, 5, 3)), false);
        assert_eq!((k.threads, k.fds, k.children), (true, false, false));
    }

    /// A state nothing was made or closed since.
    fn unchanged() -> ProcessState {
        ProcessState {
            made: process::made(),
            ..ProcessState::default()
        }
    }

    #[test]
    fn the_state_goes_to_the_very_next_exclusive_turn_only() {
        // Other tests of this binary take turns too: one of a few tries sees no turn between.
        let taken = (0..20).any(|_| {
            let first = Turn::acquire(true);
            first.hand_over(ALL, unchanged());
            drop(first);
            Turn::acquire(true).take_over(&ALL, false).is_some()
        });
        // Without the hooks nothing tells that nothing changed: every check reads the process.
        let hooks = process::made().is_some();
        assert_eq!(
            taken, hooks,
            "the next turn took the state over (hooks: {hooks})"
        );

        let first = Turn::acquire(true);
        first.hand_over(ALL, unchanged());
        drop(first);
        // A shared turn came between: the next exclusive one reads the process itself.
        drop(Turn::acquire(false));
        assert!(Turn::acquire(true).take_over(&ALL, false).is_none());
    }

    #[test]
    fn two_task_checks_share_a_thread() {
        let a = Turn::acquire(false);
        let b = Turn::acquire(false);
        drop(a);
        drop(b);
        assert_eq!(held(std::thread::current().id()), (0, 0));
    }

    #[test]
    fn a_process_check_inside_any_check_panics_instead_of_waiting() {
        for outer in [false, true] {
            let first = Turn::acquire(outer);
            let nested = std::panic::catch_unwind(|| Turn::acquire(true));
            assert!(nested.is_err(), "outer exclusive: {outer}");
            drop(first);
        }
        let first = Turn::acquire(true);
        assert!(std::panic::catch_unwind(|| Turn::acquire(false)).is_err());
        drop(first);
        assert_eq!(held(std::thread::current().id()), (0, 0));
        // The turns were given back: another thread gets one.
        std::thread::spawn(|| drop(Turn::acquire(true)))
            .join()
            .unwrap();
    }
}
