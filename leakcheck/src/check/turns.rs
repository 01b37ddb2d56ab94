//! Turns: which checks of one process may run side by side.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use super::start::lock;
use crate::process;

/// Checks take turns within a process: a check of process-wide kinds runs alone (it would
/// otherwise blame another check's runtime threads and descriptors on its own test); checks of
/// tasks only run side by side. Threads waiting for a turn are known to leakcheck and are not
/// blamed on the running check.
pub(super) struct Turn {
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
    pub(super) fn acquire(exclusive: bool) -> Turn {
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

    pub(super) fn waiting() -> HashSet<i32> {
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
