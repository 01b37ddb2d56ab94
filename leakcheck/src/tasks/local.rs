//! Tasks of a `LocalSet`, which tokio's task hooks and task dumps do not see.
//!
//! tokio runs `spawn_local` tasks outside the runtime's task list: no spawn hook, no terminate
//! hook, not in `num_alive_tasks`, not in a dump. A `LocalSet` that is forgotten (or kept in a
//! static) with pending tasks would pass a check silently. [`LocalSet`] and [`spawn_local`] are
//! drop-in replacements that record each task until its future is dropped (it finished, or its
//! `LocalSet` was dropped), so a check reports the ones still alive with their spawn site.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::task::JoinHandle;

/// One live `LocalSet` task.
#[derive(Clone, Debug)]
pub(crate) struct LocalRecord {
    pub(crate) location: &'static Location<'static>,
    /// The thread that spawned it (a `LocalSet` runs its tasks on its own thread).
    pub(crate) tid: i32,
    pub(crate) spawned: Instant,
}

static NEXT: AtomicU64 = AtomicU64::new(0);
static LIVE: Mutex<Option<FxHashMap<u64, LocalRecord>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<FxHashMap<u64, LocalRecord>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ids of the live `LocalSet` tasks.
pub(crate) fn local_ids() -> rustc_hash::FxHashSet<u64> {
    live()
        .as_ref()
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default()
}

/// A copy of every live `LocalSet` task's record.
pub(crate) fn local_tasks() -> Vec<(u64, LocalRecord)> {
    live()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
        .unwrap_or_default()
}

/// A future that is recorded as a live `LocalSet` task until it is dropped.
struct Tracked<F> {
    future: Pin<Box<F>>,
    id: u64,
}

impl<F: Future> Tracked<F> {
    fn new(future: F, location: &'static Location<'static>) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        live().get_or_insert_with(FxHashMap::default).insert(
            id,
            LocalRecord {
                location,
                tid: crate::process::current_tid(),
                spawned: Instant::now(),
            },
        );
        Tracked {
            future: Box::pin(future),
            id,
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.future.as_mut().poll(cx)
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        if let Some(m) = live().as_mut() {
            m.remove(&self.id);
        }
    }
}

/// tokio's [`LocalSet`](tokio::task::LocalSet), with tasks a leak check can see.
///
/// Every other method of tokio's `LocalSet` is reached through `Deref`; spawn with
/// [`LocalSet::spawn_local`] or [`leakcheck::spawn_local`](spawn_local) (tokio's own
/// `spawn_local` still works, but its tasks stay invisible).
///
/// ```
/// # let check = leakcheck::Check::builder().start_current_thread().unwrap();
/// let local = leakcheck::LocalSet::new();
/// local.spawn_local(std::future::pending::<()>());
/// check.block_on(local.run_until(async {}));
/// std::mem::forget(local); // the bug: its task can never finish, nor be dropped
/// let report = check.finish();
/// assert!(!report.is_clean());
/// assert!(report.survivors[0].description.contains("LocalSet task"));
/// ```
#[derive(Debug, Default)]
pub struct LocalSet {
    inner: tokio::task::LocalSet,
}

impl LocalSet {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a `!Send` task on this set, recorded for leak checks.
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.inner
            .spawn_local(Tracked::new(future, Location::caller()))
    }

    /// tokio's `LocalSet` inside.
    pub fn into_inner(self) -> tokio::task::LocalSet {
        self.inner
    }
}

impl std::ops::Deref for LocalSet {
    type Target = tokio::task::LocalSet;

    fn deref(&self) -> &tokio::task::LocalSet {
        &self.inner
    }
}

impl Future for LocalSet {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// [`tokio::task::spawn_local`], recorded for leak checks: spawns onto the `LocalSet` (or local
/// runtime) this code runs in.
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio::task::spawn_local(Tracked::new(future, Location::caller()))
}
