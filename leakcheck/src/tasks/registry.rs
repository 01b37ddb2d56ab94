//! The live-task registry behind the spawn and terminate hooks.
//!
//! The spawn hook is the hottest path leakcheck has: it runs on every `tokio::spawn`. It stores a
//! small record in one of a few sharded maps (a short uncontended lock, no allocation unless a
//! backtrace or a name is recorded); the terminate hook removes it and wakes a settling check only
//! when one is waiting. Everything else (grouping, symbols, classification) happens on survivors.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::task::Id;

const SHARDS: usize = 16;

/// What is known of one live task.
#[derive(Clone, Debug)]
pub(crate) struct TaskRecord {
    pub(crate) location: &'static Location<'static>,
    /// Nanoseconds since the registry's epoch.
    pub(crate) spawned_ns: u64,
    /// The task that spawned this one, if it was spawned from inside a task.
    pub(crate) parent: Option<Id>,
    pub(crate) name: Option<Arc<str>>,
    /// Raw instruction pointers, innermost first (when backtraces are on).
    pub(crate) frames: Option<Arc<[usize]>>,
}

#[repr(align(64))]
#[derive(Default)]
struct Shard(Mutex<FxHashMap<Id, TaskRecord>>);

pub(crate) struct Registry {
    shards: [Shard; SHARDS],
    epoch: Instant,
    backtraces: bool,
    terminated: AtomicU64,
    /// Number of threads blocked in [`Registry::wait_for_termination`].
    waiters: AtomicU64,
    wake_lock: Mutex<()>,
    wake: Condvar,
}

std::thread_local! {
    static NEXT_NAME: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// Names the tasks spawned by `f` on this thread (tokio does not expose task names to hooks).
pub(crate) fn with_name<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let prev = NEXT_NAME.with(|n| n.borrow_mut().replace(Arc::from(name)));
    let out = f();
    NEXT_NAME.with(|n| *n.borrow_mut() = prev);
    out
}

impl Registry {
    pub(crate) fn new(backtraces: bool) -> Arc<Self> {
        Arc::new(Self {
            shards: Default::default(),
            epoch: Instant::now(),
            backtraces,
            terminated: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
        })
    }

    fn shard(&self, id: Id) -> &Mutex<FxHashMap<Id, TaskRecord>> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(id);
        &self.shards[(h >> 60) as usize % SHARDS].0
    }

    #[inline]
    pub(crate) fn on_spawn(&self, id: Id, location: &'static Location<'static>) {
        let frames = self
            .backtraces
            .then(|| Arc::from(super::capture::capture_whole()));
        let name = NEXT_NAME.with(|n| n.borrow().clone());
        let record = TaskRecord {
            location,
            spawned_ns: self.epoch.elapsed().as_nanos() as u64,
            parent: tokio::task::try_id(),
            name,
            frames,
        };
        lock(self.shard(id)).insert(id, record);
    }

    #[inline]
    pub(crate) fn on_terminate(&self, id: Id) {
        lock(self.shard(id)).remove(&id);
        self.terminated.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _g = lock(&self.wake_lock);
            self.wake.notify_all();
        }
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn terminations(&self) -> u64 {
        self.terminated.load(Ordering::SeqCst)
    }

    /// A copy of every live record whose id is not in `except`.
    pub(crate) fn snapshot_except(
        &self,
        except: &rustc_hash::FxHashSet<Id>,
    ) -> Vec<(Id, TaskRecord)> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(
                lock(&s.0)
                    .iter()
                    .filter(|(id, _)| !except.contains(id))
                    .map(|(id, r)| (*id, r.clone())),
            );
        }
        out
    }

    /// A copy of every live record.
    pub(crate) fn snapshot(&self) -> Vec<(Id, TaskRecord)> {
        self.snapshot_except(&rustc_hash::FxHashSet::default())
    }

    /// Ids only: the cheap form of a snapshot, for baselines.
    pub(crate) fn ids(&self) -> rustc_hash::FxHashSet<Id> {
        let mut out = rustc_hash::FxHashSet::default();
        for s in &self.shards {
            out.extend(lock(&s.0).keys().copied());
        }
        out
    }

    /// Blocks until a task terminates after `seen` terminations were counted, or `timeout`.
    pub(crate) fn wait_for_termination(&self, seen: u64, timeout: Duration) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let g = lock(&self.wake_lock);
        if self.terminations() == seen {
            let _ = self
                .wake
                .wait_timeout_while(g, timeout, |_| self.terminations() == seen);
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
