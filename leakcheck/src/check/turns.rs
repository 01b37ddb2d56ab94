//! Turns: which checks of one process may run side by side.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::start::lock;
use crate::process;

/// Checks take turns within a process: a check of process-wide kinds runs alone (it would
/// otherwise blame another check's runtime threads and descriptors on its own test); checks of
/// tasks only run side by side. Threads waiting for a turn are known to leakcheck and are not
/// blamed on the running check.
pub(super) struct Turn {
    exclusive: bool,
    /// The thread that took it: a check may be finished (and its turn dropped) on another.
    owner: ThreadId,
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
}

static TURNS: (Mutex<Turns>, Condvar) = (
    Mutex::new(Turns {
        exclusive: false,
        shared: 0,
        exclusive_waiting: 0,
        parked: 0,
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
            lock(&TURNS.0).shared += 1;
            set_held(owner, (0, held_shared + 1));
            return Turn { exclusive, owner };
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
        BUSY.store(true, Ordering::Release);
        drop(t);
        lock(&WAITING).retain(|w| *w != tid);
        set_held(owner, if exclusive { (1, 0) } else { (0, 1) });
        Turn { exclusive, owner }
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
