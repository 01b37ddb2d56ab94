//! Classification: each survivor's component, description and status (known by a rule, or
//! unknown).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::Id;

use super::start::{
    location, lock, ms, Check, ProcessState, RuntimeRole, RUNTIME_COMPONENT, RUNTIME_THREAD_NAME,
    UNNAMED_THREAD,
};
use super::turns::Turn;
use crate::component;
use crate::process;
use crate::report::{Kind, Note, Status, Survivor};
use crate::rules::Subject;
use crate::tasks::{self, AwaitTrace, Frame, Registry, TaskRecord};

impl Check {
    /// When an unknown process-wide survivor is found while other (unchecked) tests run in
    /// this process, says that it may be theirs.
    pub(super) fn parallel_tests_note(
        &self,
        found: &[Survivor],
        state: &ProcessState,
    ) -> Option<Note> {
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

    /// When a listing of threads during the check did not add up even after its tries
    /// ([`process::unsettled_listings`]), says that a thread may have been missed: the verdict
    /// on threads is then not proof.
    pub(super) fn unsettled_listings_note(&self) -> Option<Note> {
        let n = process::unsettled_listings().saturating_sub(self.unsettled_listings);
        (self.kinds.threads && n > 0).then(|| Note {
            kind: Some(Kind::Thread),
            message: format!(
                "{n} reading(s) of the thread list did not add up to the process's thread count in {} tries, threads starting and exiting meanwhile: a live thread may be missing from them, so a clean verdict on threads is not proof; run again",
                process::RELISTS
            ),
        })
    }

    /// A thread of another test: named after a test of this binary, but not after this one (a
    /// thread this test spawned without a name carries this test's name), or one libtest just
    /// started (it has the main thread's name until it takes its test's).
    pub(super) fn is_test_thread(&self, t: &process::Thread) -> bool {
        let starting = t.name == self.main_name && t.tid as u32 != std::process::id();
        (starting && self.test_names.is_some() && t.name != self.own_name)
            || self.names_another_test(&t.name)
    }

    /// Whether `name` (a thread's, 15 bytes) is that of another test of this binary.
    fn names_another_test(&self, name: &str) -> bool {
        self.test_names
            .is_some_and(|names| name != self.own_name && names.contains(name))
    }

    /// Whether descriptor `f` was opened by a thread that is not this check's: neither the
    /// test's thread, the one finishing the check, the checked runtime's, nor one started
    /// during the check by anything but the test harness. Unknown (no origin) is not.
    pub(super) fn made_by_another_test(&self, f: &process::Fd) -> bool {
        let Some(rec) = &self.origins else {
            return false;
        };
        let Some(o) = rec.fd(f.fd) else {
            return false;
        };
        let by = o.creator;
        if by == self.own_tid
            || by == process::current_tid()
            || self
                .runtime_threads
                .as_ref()
                .is_some_and(|r| r.role(by).is_some())
        {
            return false;
        }
        // A thread that predates the check (a test's, or a singleton's), or one libtest
        // started for another test meanwhile.
        rec.thread(by)
            .is_none_or(|t| made_by_libtest(&tasks::resolve_frames(&t.frames)))
    }

    /// The pids of `children` started by the thread of another test running in parallel (under
    /// `cargo test`: the starting thread was named after a test of this binary other than this
    /// one), and of their descendants (listed after their parents).
    pub(super) fn other_tests_children(&self, children: &[process::Child]) -> HashSet<i32> {
        let mut others = HashSet::new();
        let (Some(_), Some(rec)) = (self.test_names, &self.origins) else {
            return others;
        };
        for c in children {
            let started_by_other = rec.child(c.pid).is_some_and(|o| {
                o.creator != self.own_tid && self.names_another_test(&o.creator_name)
            });
            if started_by_other || c.parent.as_ref().is_some_and(|(p, _)| others.contains(p)) {
                others.insert(c.pid);
            }
        }
        others
    }

    /// Whether descriptor `f` was opened by the thread of another test running in parallel
    /// (under `cargo test`): that thread, still alive, is named after a test of this binary
    /// other than this one. (One whose thread has ended cannot be told apart: it is counted.)
    pub(super) fn opened_by_other_test(
        &self,
        f: &process::Fd,
        threads: &[process::Thread],
    ) -> bool {
        let (Some(_), Some(rec)) = (self.test_names, &self.origins) else {
            return false;
        };
        let Some(creator) = rec.fd_creator(f.fd) else {
            return false;
        };
        if creator == self.own_tid || creator == process::current_tid() {
            return false;
        }
        let name = match threads.iter().find(|t| t.tid == creator) {
            Some(t) => Some(t.name.clone()),
            None => process::unrecorded(|| {
                process::stat(&format!("/proc/self/task/{creator}/stat")).map(|st| st.comm)
            }),
        };
        name.is_some_and(|n| self.names_another_test(&n))
    }

    /// Whether `t` is a thread spawned without a name from this check's thread.
    pub(super) fn is_unnamed_child_thread(&self, t: &process::Thread) -> bool {
        t.tid != self.own_tid && !self.own_name.is_empty() && t.name == self.own_name
    }

    pub(super) fn thread_component(&self, t: &process::Thread) -> String {
        self.thread_view(t).1
    }

    /// A thread's full name, component, what it is when its name does not say, and where it
    /// was started.
    pub(super) fn thread_view(
        &self,
        t: &process::Thread,
    ) -> (String, String, Option<&'static str>, Arc<Provenance>) {
        let p = self.provenance_of(&format!("t{}:{}", t.tid, t.start), || {
            let o = self.origins.as_ref()?.thread(t.tid)?;
            Some((o.frames, o.creator, o.name, o.gen))
        });
        // Linux keeps 15 bytes of a name; the hook saw all of it.
        let name = p
            .full_name
            .as_deref()
            .filter(|n| n.starts_with(t.name.as_str()))
            .unwrap_or(&t.name)
            .to_string();
        let (mut component, why) = self.thread_origin(t);
        if why.is_none() {
            // A catalogued family first (stable across versions), then who started it.
            let family = component::of_thread(&name);
            component = if component::is_catalogued(&name) {
                family
            } else {
                p.owner().unwrap_or(family)
            };
        }
        (name, component, why, p)
    }

    /// A descriptor's component (the crate that made it, else its type) and where it was made.
    pub(super) fn fd_view(&self, f: &process::Fd) -> (String, Arc<Provenance>) {
        let p = self.provenance_of(&format!("f{}:{}", f.fd, f.target), || {
            let o = self.origins.as_ref()?.fd(f.fd)?;
            Some((o.frames, o.creator, None, o.gen))
        });
        (p.owner().unwrap_or_else(|| f.kind()), p)
    }

    /// A thread's component, and what it is when its name alone does not say: the checked
    /// runtime's worker or blocking thread, or a thread spawned without a name (which carries
    /// its creator's name: the test's, or the runtime thread's when a task spawned it).
    fn thread_origin(&self, t: &process::Thread) -> (String, Option<&'static str>) {
        if t.name == RUNTIME_THREAD_NAME {
            let blocked = self
                .worker_blocked
                .load(std::sync::atomic::Ordering::Relaxed);
            let role = self.runtime_threads.as_ref().map(|r| match r.role(t.tid) {
                // A worker's thread returns to the blocking pool when the runtime shuts down,
                // and may run a queued spawn_blocking there: a worker only if one was blocked.
                Some(RuntimeRole::Worker) if !blocked => Some(RuntimeRole::Blocking),
                role => role,
            });
            return match role {
                Some(Some(RuntimeRole::Worker)) => (
                    RUNTIME_COMPONENT.into(),
                    Some("a worker of the checked runtime, still running after its shutdown: a task blocks it (a blocking call in async code?)"),
                ),
                Some(Some(RuntimeRole::Unknown)) | None => (
                    RUNTIME_COMPONENT.into(),
                    Some("outlived the runtime's shutdown: a stuck spawn_blocking or block_in_place, or a worker blocked by a task?"),
                ),
                Some(Some(RuntimeRole::Blocking)) => (
                    RUNTIME_COMPONENT.into(),
                    Some("a blocking-pool thread of the checked runtime, still running after its shutdown: a stuck spawn_blocking or block_in_place"),
                ),
                Some(None) => (
                    UNNAMED_THREAD.into(),
                    Some("spawned without a name from inside the checked runtime (by a task or a blocking closure): it carries the runtime thread's name"),
                ),
            };
        }
        if self
            .binary
            .as_ref()
            .is_some_and(|b| b.is_test_name(&t.name))
        {
            return (
                UNNAMED_THREAD.into(),
                Some("spawned without a name by a test: it carries the name of the test's thread"),
            );
        }
        if self.is_unnamed_child_thread(t) {
            return (
                UNNAMED_THREAD.into(),
                Some("spawned without a name: it carries the name of the thread that spawned it, this test's"),
            );
        }
        (component::of_thread(&t.name), None)
    }

    /// A task's component: the crate that spawned it, or, when a library spawned it on behalf
    /// of the user's code, the library the user called (`via`), as for threads and descriptors.
    /// A library's task may be spawned through another crate's executor (tonic's through
    /// hyper-util's `TokioExecutor`): the crate the user called owns it.
    pub(super) fn task_component(&self, rec: &TaskRecord) -> Arc<str> {
        let (spawner, in_library) = self.spawner(rec);
        match rec.frames.as_deref().filter(|_| in_library) {
            Some(frames) => owner(
                spawner,
                tasks::user_and_via(&tasks::resolve_frames(frames)).1,
            ),
            None => spawner,
        }
    }

    /// The crate of a task's spawn site, and whether it is a library's: resolved once per site.
    fn spawner(&self, rec: &TaskRecord) -> (Arc<str>, bool) {
        let key = rec.location as *const _ as usize;
        lock(&self.components)
            .entry(key)
            .or_insert_with(|| {
                let file = rec.location.file();
                (
                    component::of_path(file).into(),
                    component::is_library_path(file),
                )
            })
            .clone()
    }

    pub(super) fn task_survivor(
        &self,
        reg: &Registry,
        id: Id,
        rec: &TaskRecord,
        await_trace: Option<AwaitTrace>,
    ) -> Survivor {
        let frames: Vec<Frame> = rec
            .frames
            .as_deref()
            .map(tasks::resolve_frames)
            .unwrap_or_default();
        let (user_frame, via) = tasks::user_and_via(&frames);
        let (user_frame, via) = (user_frame.cloned(), via.cloned());
        let user: Vec<Frame> = frames.into_iter().filter(|f| !f.is_runtime()).collect();
        let (spawner, in_library) = self.spawner(rec);
        let mut component = if in_library {
            owner(spawner, via.as_ref())
        } else {
            spawner
        }
        .to_string();
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
            user_frame,
            via,
            backtrace: user,
            await_trace,
            age_ms: Some(ms(age.elapsed())),
        }
    }

    /// `leakcheck::LocalSet` tasks spawned during the check, on its thread or its runtime's,
    /// and still alive: their `LocalSet` was forgotten, kept, or is not being run.
    pub(super) fn local_task_survivors(&self) -> Vec<Survivor> {
        let ours = |tid: i32| {
            tid == self.own_tid
                || self
                    .runtime_threads
                    .as_ref()
                    .is_some_and(|r| r.role(tid).is_some())
        };
        let mut out: Vec<Survivor> = tasks::local_tasks()
            .into_iter()
            .filter(|(id, rec)| !self.baseline.local_tasks.contains(id) && ours(rec.tid))
            .map(|(id, rec)| {
                let l = rec.location;
                let location = format!("{}:{}:{}", l.file(), l.line(), l.column());
                let component = component::of_path(l.file());
                let status = self.classify(&Subject {
                    kind: Kind::Task,
                    component: &component,
                    spawn_location: Some(&location),
                    ..Default::default()
                });
                let description = format!(
                    "LocalSet task spawned at {location} (its LocalSet is still alive and was not run to the task's end: forgotten, kept in a static, or never dropped)"
                );
                Survivor {
                    spawn_location: Some(location),
                    age_ms: Some(ms(rec.spawned.elapsed())),
                    ..Survivor::plain(
                        Kind::Task,
                        format!("local-{id}"),
                        component,
                        status,
                        description,
                        None,
                    )
                }
            })
            .collect();
        out.sort_by_key(|s| s.age_ms.map(|a| -(a as i64)));
        out
    }

    pub(super) fn classify(&self, s: &Subject<'_>) -> Status {
        match self.rules.first_match(s) {
            Some(r) => Status::Known {
                rule: r.name().to_string(),
                reason: r.reason().to_string(),
                origin: r.origin().map(str::to_string),
            },
            None => Status::Unknown,
        }
    }

    pub(super) fn process_survivors(
        &self,
        state: &ProcessState,
        waiting: &HashSet<i32>,
        uncounted: &mut Uncounted,
    ) -> Vec<(String, Survivor)> {
        let Uncounted {
            waiting: excluded,
            test_threads,
            test_fds,
            test_children,
        } = uncounted;
        let mut out = Vec::new();
        if self.kinds.threads {
            for t in &state.threads {
                // The thread running the check is never its leak.
                if t.tid == self.own_tid {
                    continue;
                }
                // First: a waiting thread may be listed unread (start time 0).
                if waiting.contains(&t.tid) {
                    *excluded += 1;
                    continue;
                }
                if process::is_own(t) || self.baseline.had(&self.baseline.threads, t.tid, t.start) {
                    continue;
                }
                if self.is_test_thread(t) {
                    *test_threads += 1;
                    continue;
                }
                let key = format!("t{}:{}", t.tid, t.start);
                let (name, component, why, p) = self.thread_view(t);
                if let Some(b) = &self.binary {
                    // libtest's thread of a test (exiting), or a thread a check inside this
                    // one has judged already.
                    if p.harness || b.checked_inside(&p, Kind::Thread, Some(&t.name)) {
                        *test_threads += 1;
                        continue;
                    }
                }
                let status = self.classify(&Subject {
                    kind: Kind::Thread,
                    component: &component,
                    thread_name: Some(&name),
                    frames: &p.frames,
                    ..Default::default()
                });
                let mut description = format!("thread `{name}`");
                if let Some(why) = why {
                    description.push_str(" (");
                    description.push_str(why);
                    description.push(')');
                }
                if let Some(test) = self
                    .binary
                    .as_ref()
                    .and_then(|b| b.test_of(Some(&t.name), &p))
                {
                    description.push_str(&format!(" (left by test `{test}`)"));
                }
                out.push((
                    key,
                    p.fill(Survivor::plain(
                        Kind::Thread,
                        t.tid.to_string(),
                        component,
                        status,
                        description,
                        Some(name),
                    )),
                ));
            }
        }
        if self.kinds.fds {
            let fds = state.fds.iter().filter(|f| !self.baseline.fds.contains(*f));
            for f in fds {
                if self.opened_by_other_test(f, &state.threads) {
                    *test_fds += 1;
                    continue;
                }
                let key = format!("f{}:{}", f.fd, f.target);
                let (component, p) = self.fd_view(f);
                let mut target = f.describe();
                if let Some(b) = &self.binary {
                    if b.checked_inside(&p, Kind::Fd, None) {
                        continue;
                    }
                    if let Some(test) = b.test_of(None, &p) {
                        target.push_str(&format!(" (left by test `{test}`)"));
                    }
                }
                let status = self.classify(&Subject {
                    kind: Kind::Fd,
                    component: &component,
                    fd_target: Some(&target),
                    frames: &p.frames,
                    ..Default::default()
                });
                out.push((
                    key,
                    p.fill(Survivor::plain(
                        Kind::Fd,
                        f.fd.to_string(),
                        component,
                        status,
                        target,
                        None,
                    )),
                ));
            }
        }
        if self.kinds.children {
            let others = self.other_tests_children(&state.children);
            for c in &state.children {
                if self.baseline.had_child(c)
                    || self
                        .binary
                        .as_ref()
                        .is_some_and(|b| b.child_checked_inside(c.start))
                {
                    continue;
                }
                if others.contains(&c.pid) {
                    *test_children += 1;
                    continue;
                }
                let p = self.provenance_of(&format!("c{}:{}", c.pid, c.start), || {
                    let o = self.origins.as_ref()?.child(c.pid)?;
                    Some((o.frames, o.creator, None, o.gen))
                });
                let component = component::of_cmdline(&c.cmdline);
                let status = self.classify(&Subject {
                    kind: Kind::Child,
                    component: &component,
                    child_cmdline: Some(&c.cmdline),
                    ..Default::default()
                });
                let mut description = if c.state == 'Z' {
                    format!("{} (exited, never waited for)", c.cmdline)
                } else {
                    c.cmdline.clone()
                };
                match (&c.parent, c.orphan) {
                    (Some((pid, cmd)), false) => {
                        description.push_str(&format!(" (started by `{cmd}`, pid {pid})"))
                    }
                    (Some((pid, cmd)), true) => description.push_str(&format!(
                        " (orphaned: started by `{cmd}`, pid {pid}, which exited; re-parented to the test process)"
                    )),
                    (None, true) | (None, false) => {}
                }
                out.push((
                    format!("c{}:{}", c.pid, c.start),
                    p.fill(Survivor::plain(
                        Kind::Child,
                        c.pid.to_string(),
                        component,
                        status,
                        description,
                        None,
                    )),
                ));
            }
        }
        out
    }
}

/// Whether `f` is leakcheck building the checked runtime (`Check::start`, often inlined into
/// its callers, and then named `start` alone in an optimized build: matched by its source file,
/// leakcheck's own).
fn builds_checked_runtime(f: &Frame) -> bool {
    f.function.rsplit("::").next() == Some("start")
        && f.file
            .as_deref()
            .is_some_and(|p| p.replace('\\', "/").ends_with("src/check/start.rs"))
        && f.is_runtime()
}

/// The component of a task spawned in the library `spawner`: the library the user called
/// (`via`) when that is another crate (the spawn went through its executor), else `spawner`.
fn owner(spawner: Arc<str>, via: Option<&Frame>) -> Arc<str> {
    match via.map(Frame::origin) {
        Some(tasks::Origin::Library(k)) if *k != *spawner => k.into(),
        _ => spawner,
    }
}

/// Whether libtest itself made it (a test's thread): the innermost caller beyond the standard
/// library is libtest, not code of the test (whose frames are above libtest's on a test thread).
fn made_by_libtest(frames: &[Frame]) -> bool {
    let libtest = frames.iter().position(|f| f.function.starts_with("test::"));
    let other = frames
        .iter()
        .position(|f| !matches!(f.origin(), tasks::Origin::Runtime));
    match (libtest, other) {
        (Some(l), Some(o)) => l < o,
        (Some(_), None) => true,
        _ => false,
    }
}

/// What a reading of the process left out, and why.
#[derive(Default)]
pub(super) struct Uncounted {
    /// Threads of other checks waiting for their turn.
    pub(super) waiting: usize,
    /// Threads of other tests running in parallel (`cargo test`).
    pub(super) test_threads: usize,
    /// Descriptors those tests' threads opened.
    pub(super) test_fds: usize,
    /// Children those tests started, with their descendants.
    pub(super) test_children: usize,
}

/// Where a thread, descriptor or child came from: its creation stack, resolved once per check.
#[derive(Debug, Default)]
pub(crate) struct Provenance {
    /// The creation stack without the runtime's frames.
    frames: Vec<Frame>,
    user: Option<Frame>,
    via: Option<Frame>,
    /// The innermost library frame's crate, when no user frame was found.
    library: Option<String>,
    /// The thread's name as given to `pthread_setname_np`.
    full_name: Option<String>,
    /// The thread it was created on, when that thread's own origin named the user's frame
    /// (librdkafka's broker threads open sockets; its main thread starts them).
    on_thread: Option<String>,
    /// Made while leakcheck built the checked runtime (its drivers' descriptors).
    checked_runtime: bool,
    /// Made by libtest to run a test (the test's own thread).
    pub(super) harness: bool,
    /// The recording generation it was made in.
    pub(super) gen: Option<u64>,
}

impl Provenance {
    /// The crate that made it: the checked runtime, the library the user called, else the
    /// user's own package, else the library whose code created it.
    fn owner(&self) -> Option<String> {
        if self.checked_runtime {
            return Some(RUNTIME_COMPONENT.into());
        }
        if let Some(v) = &self.via {
            if let tasks::Origin::Library(k) = v.origin() {
                return Some(k);
            }
        }
        if let Some(u) = &self.user {
            return Some(match &u.file {
                Some(f) => component::of_path(f),
                None => component::of_function(&u.function),
            });
        }
        self.library.clone()
    }

    pub(super) fn user(&self) -> Option<&Frame> {
        self.user.as_ref()
    }

    fn fill(&self, mut s: Survivor) -> Survivor {
        s.user_frame = self.user.clone();
        s.via = self.via.clone();
        s.backtrace = self.frames.clone();
        if let Some(t) = &self.on_thread {
            s.description
                .push_str(&format!(" (created on thread `{t}`)"));
        }
        s
    }
}

impl Check {
    /// The provenance of the thread or descriptor `key`, from its recorded origin (`raw`: the
    /// frames, the creating thread, the full name), resolved once.
    fn provenance_of(
        &self,
        key: &str,
        raw: impl FnOnce() -> Option<(Vec<usize>, i32, Option<String>, u64)>,
    ) -> Arc<Provenance> {
        if let Some(p) = lock(&self.provenance).get(key) {
            return p.clone();
        }
        // Not found is not remembered: a new thread shows in /proc a moment before it runs the
        // hook's trampoline, which records it.
        let Some((frames, creator, name, gen)) = raw() else {
            return Arc::default();
        };
        let p = Arc::new(Provenance {
            gen: Some(gen),
            ..self.resolve_provenance(&frames, creator, name)
        });
        lock(&self.provenance).insert(key.to_string(), p.clone());
        p
    }

    fn resolve_provenance(
        &self,
        raw: &[usize],
        mut creator: i32,
        full_name: Option<String>,
    ) -> Provenance {
        let frames = tasks::resolve_frames(raw);
        let (user, via) = tasks::user_and_via(&frames);
        let checked_runtime = frames.iter().any(builds_checked_runtime);
        let mut p = Provenance {
            checked_runtime,
            harness: made_by_libtest(&frames),
            gen: None,
            user: user.cloned(),
            via: via.cloned(),
            library: frames.iter().find_map(|f| match f.origin() {
                tasks::Origin::Library(k) => Some(k),
                _ => None,
            }),
            full_name,
            frames: frames.into_iter().filter(|f| !f.is_runtime()).collect(),
            on_thread: None,
        };
        // Made on a thread that code of the user's had a library start: that start names the
        // user's line. A few hops at most (librdkafka: caller → rdk:main → rdk:broker).
        let Some(rec) = &self.origins else {
            return p;
        };
        let made_on = creator;
        for _ in 0..4 {
            if p.user.is_some() {
                break;
            }
            let Some(o) = rec.thread(creator) else {
                break;
            };
            let frames = tasks::resolve_frames(&o.frames);
            // A runtime's worker or blocking thread (tokio starts them all from its blocking
            // pool) runs whatever task is polled: where the runtime was built says nothing
            // about who made this.
            if frames
                .iter()
                .any(|f| f.function.starts_with("tokio::runtime::blocking::pool::"))
            {
                break;
            }
            let (user, via) = tasks::user_and_via(&frames);
            if let Some(u) = user {
                p.user = Some(u.clone());
                p.via = via.cloned();
                p.on_thread = rec.thread(made_on).and_then(|o| o.name).or_else(|| {
                    process::stat(&format!("/proc/self/task/{made_on}/stat")).map(|s| s.comm)
                });
            }
            creator = o.creator;
        }
        p
    }
}

impl Survivor {
    /// A survivor known by what it is, with no spawn site, frames or traces.
    pub(crate) fn plain(
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
            via: None,
            backtrace: Vec::new(),
            await_trace: None,
            age_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_runtime_is_built_by_check_start_however_it_is_named() {
        let start = concat!(env!("CARGO_MANIFEST_DIR"), "/src/check/start.rs");
        let frame = |function: &str, file: &str| Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(1),
        };
        for f in [
            frame(
                "leakcheck::check::start::<impl leakcheck::check::Check>::start",
                start,
            ),
            // Inlined into its caller in an optimized build with line tables only.
            frame("start", start),
        ] {
            assert!(builds_checked_runtime(&f), "{f:?}");
        }
        // A `start` of the user's own, in a file of the same name.
        assert!(!builds_checked_runtime(&frame(
            "start",
            "/work/app/src/check/start.rs"
        )));
        assert!(!builds_checked_runtime(&frame("start_multi_thread", start)));
    }
}
