//! Leak scenarios. A body gets whether to leak and returns a `Leftovers` that the caller drops
//! after the report, so a leaky scenario releases what it leaked (threads unblocked, children
//! killed) before the next test. Async bodies run on the check's runtime (`Check::block_on` in
//! the engine tests, the test's own runtime under `#[leak_test]`).

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use leakcheck::{Check, CheckBuilder, Kind, Rule};

/// What a leak must look like in the report.
#[derive(Clone, Debug)]
pub struct Expected {
    pub kind: Kind,
    /// The survivor's component, exactly.
    pub component: &'static str,
    /// A fragment of its description (spawn site, thread name, target, command line).
    pub description: &'static str,
    /// `None` for an unknown survivor (a failure); `Some(rule)` for a known one.
    pub known_as: Option<&'static str>,
}

/// Anything a scenario keeps alive until the report is taken; dropped afterwards.
pub type Leftovers = Vec<Box<dyn Send>>;

/// A scenario's body: plain code, or a future for the check's runtime.
#[derive(Clone, Copy)]
pub enum Body {
    Sync(fn(bool) -> Leftovers),
    Async(fn(bool) -> BoxedBody),
}

impl Body {
    /// Runs the body, on `check`'s runtime if it is async.
    pub fn run(self, check: &Check, leaky: bool) -> Leftovers {
        match self {
            Body::Sync(f) => f(leaky),
            Body::Async(f) => check.block_on(f(leaky)),
        }
    }
}

/// Runs `name`'s async body (inside a `#[leak_test]` runtime).
pub async fn run_async(name: &str, leaky: bool) -> Leftovers {
    match scenario(name).body {
        Body::Async(f) => f(leaky).await,
        Body::Sync(_) => panic!("scenario `{name}` is synchronous"),
    }
}

/// Runs `name`'s synchronous body.
pub fn run_sync(name: &str, leaky: bool) -> Leftovers {
    match scenario(name).body {
        Body::Sync(f) => f(leaky),
        Body::Async(_) => panic!("scenario `{name}` is async"),
    }
}

static PARKED: Mutex<Option<HashMap<String, Leftovers>>> = Mutex::new(None);

/// Keeps `leftovers` alive after a `#[leak_test]` body returns, until [`release`].
pub fn park(name: &str, leftovers: Leftovers) {
    PARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), leftovers);
}

/// Drops what [`park`] kept for `name`.
pub fn release(name: &str) {
    let left = PARKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|m| m.remove(name));
    drop(left);
}

pub struct Scenario {
    pub name: &'static str,
    /// The check's configuration (runtime flavor and rules are chosen by `start`).
    pub configure: fn(CheckBuilder) -> CheckBuilder,
    pub start: fn(CheckBuilder) -> Check,
    pub body: Body,
    /// The survivors the leaky variant must show (each entry one or more); the clean twin must
    /// show none unknown.
    pub expected: &'static [Expected],
    /// Whether the leaky variant still passes (lingering tasks, known survivors).
    pub leaky_passes: bool,
    /// Fragments the leaky variant's notes must contain (what the report says beside its
    /// survivors).
    pub notes: &'static [&'static str],
}

fn multi(b: CheckBuilder) -> Check {
    b.start_multi_thread(2).expect("start check")
}

fn current(b: CheckBuilder) -> Check {
    b.start_current_thread().expect("start check")
}

fn sync(b: CheckBuilder) -> Check {
    b.start().expect("start check")
}

fn same(b: CheckBuilder) -> CheckBuilder {
    b
}

const THIS_FILE: &str = "leakcheck-tests::scenarios";

/// Releases a blocked thread when dropped.
struct Release(mpsc::Sender<()>);
impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Kills and reaps a child when dropped.
pub struct Reap(pub std::process::Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn infinite_loop(leaky: bool) -> BoxedBody {
    block(async move {
        let task = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        if !leaky {
            task.abort();
            let _ = task.await;
        }
        Vec::new()
    })
}

fn channel_blocked(leaky: bool) -> BoxedBody {
    block(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let task = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        // Let it reach its await point.
        tokio::task::yield_now().await;
        if leaky {
            // The sender outlives the check: the task waits forever.
            return vec![Box::new(tx) as Box<dyn Send>];
        }
        drop(tx);
        task.await.unwrap();
        Vec::new()
    })
}

fn interval_loop(leaky: bool) -> BoxedBody {
    block(async move {
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop => break,
                }
            }
        });
        if leaky {
            return vec![Box::new(stop_tx) as Box<dyn Send>];
        }
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        Vec::new()
    })
}

/// A pool whose `close()` joins its workers but, in the broken variant, not its dispatcher.
struct Pool {
    jobs: Option<tokio::sync::mpsc::Sender<u32>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
    _dispatch_tx: Option<tokio::sync::mpsc::Sender<u32>>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let (tx, rx) = tokio::sync::mpsc::channel::<u32>(16);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let (dtx, mut drx) = tokio::sync::mpsc::channel::<u32>(16);
        let workers = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move { while rx.lock().await.recv().await.is_some() {} })
            })
            .collect();
        let forward = tx.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(j) = drx.recv().await {
                if forward.send(j).await.is_err() {
                    break;
                }
            }
        });
        Pool {
            jobs: Some(tx),
            workers,
            dispatcher: Some(dispatcher),
            _dispatch_tx: Some(dtx),
        }
    }

    async fn close(mut self, join_dispatcher: bool) -> Leftovers {
        drop(self.jobs.take());
        let mut keep: Leftovers = Vec::new();
        if join_dispatcher {
            drop(self._dispatch_tx.take());
            self.dispatcher.take().unwrap().await.unwrap();
        } else {
            // The bug: the dispatcher's input stays open and nobody awaits it.
            keep.push(Box::new(self._dispatch_tx.take()));
        }
        for w in self.workers.drain(..) {
            if join_dispatcher {
                w.await.unwrap();
            } else {
                w.abort();
            }
        }
        keep
    }
}

fn pool_dispatcher(leaky: bool) -> BoxedBody {
    block(async move {
        let pool = Pool::new(2);
        pool.close(!leaky).await
    })
}

fn stuck_spawn_blocking(leaky: bool) -> BoxedBody {
    block(async move {
        let (tx, rx) = mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        if leaky {
            return vec![Box::new(Release(tx)) as Box<dyn Send>];
        }
        drop(tx);
        task.await.unwrap();
        Vec::new()
    })
}

fn std_thread(leaky: bool) -> Leftovers {
    let (tx, rx) = mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("orphan-worker".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    if leaky {
        return vec![Box::new(Release(tx))];
    }
    drop(tx);
    t.join().unwrap();
    Vec::new()
}

/// A thread spawned without a name: it carries its creator's (the test's) name.
fn unnamed_thread(leaky: bool) -> Leftovers {
    let (tx, rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    if leaky {
        return vec![Box::new(Release(tx))];
    }
    drop(tx);
    t.join().unwrap();
    Vec::new()
}

fn tcp_left_open(leaky: bool) -> Leftovers {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(listener);
    drop(server);
    if leaky {
        return vec![Box::new(client)];
    }
    drop(client);
    Vec::new()
}

fn child_running(leaky: bool) -> Leftovers {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    if leaky {
        return vec![Box::new(Reap(child))];
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Vec::new()
}

fn child_never_waited(leaky: bool) -> Leftovers {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    if leaky {
        // Exited, but nobody waits: a zombie. Wait until it has exited (not a blind sleep).
        let pid = child.id();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            std::thread::yield_now();
        }
        return vec![Box::new(Reap(child))];
    }
    child.wait().unwrap();
    Vec::new()
}

fn file_left_open(leaky: bool) -> Leftovers {
    let path = std::env::temp_dir().join(format!("leakcheck-scenario-{}.log", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "hello").unwrap();
    let log = TempLog(Some(f), path);
    if leaky {
        return vec![Box::new(log)];
    }
    Vec::new()
}

/// A file that is closed, then removed, when dropped.
struct TempLog(Option<std::fs::File>, std::path::PathBuf);

impl Drop for TempLog {
    fn drop(&mut self) {
        drop(self.0.take());
        let _ = std::fs::remove_file(&self.1);
    }
}

fn lingers_50ms(_leaky: bool) -> BoxedBody {
    block(async {
        tokio::spawn(async { tokio::time::sleep(Duration::from_millis(50)).await });
        Vec::new()
    })
}

fn exits_after_deadline(leaky: bool) -> BoxedBody {
    let wait = if leaky { 400 } else { 20 };
    block(async move {
        tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(wait)).await });
        Vec::new()
    })
}

fn short_deadline(b: CheckBuilder) -> CheckBuilder {
    b.settle_deadline(Duration::from_millis(100))
}

/// Stands for a third-party library's harmless global ticker.
pub mod metrics_lib {
    pub fn start_global_ticker() {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

fn known_singleton(_leaky: bool) -> BoxedBody {
    block(async {
        metrics_lib::start_global_ticker();
        Vec::new()
    })
}

fn allow_metrics(b: CheckBuilder) -> CheckBuilder {
    b.allow(
        Rule::builder(
            "metrics-ticker",
            "the metrics library starts one global ticker and never stops it",
        )
        .kind(Kind::Task)
        .top_frame(r"metrics_lib::start_global_ticker")
        .build()
        .unwrap(),
    )
}

fn spawned_by_leaked(leaky: bool) -> BoxedBody {
    block(async move {
        let parent = tokio::spawn(async {
            let child = tokio::spawn(std::future::pending::<()>());
            // Aborting the parent drops this guard, which aborts the child.
            let _guard = AbortOnDrop(child.abort_handle());
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        if !leaky {
            parent.abort();
            let _ = parent.await;
        }
        Vec::new()
    })
}

fn forgotten_pending(leaky: bool) -> BoxedBody {
    block(async move {
        let task = tokio::spawn(std::future::pending::<()>());
        if !leaky {
            task.abort();
            let _ = task.await;
        }
        Vec::new()
    })
}

/// A `LocalSet` forgotten with a pending task: tokio's hooks never see its tasks.
fn local_set_forgotten(leaky: bool) -> BoxedBody {
    block(async move {
        {
            let local = leakcheck::LocalSet::new();
            local.spawn_local(std::future::pending::<()>());
            if leaky {
                std::mem::forget(local);
            }
        }
        Vec::new()
    })
}

/// Kills and reaps a process that is not a `std::process::Child` (an adopted orphan).
pub struct ReapPid(pub i32);
impl Drop for ReapPid {
    fn drop(&mut self) {
        // SAFETY: signals and waits for one pid.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A grandchild whose parent exits at once (a daemonizing script).
fn orphaned_grandchild(leaky: bool) -> Leftovers {
    let out = std::process::Command::new("sh")
        .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let orphan = ReapPid(pid);
    if leaky {
        return vec![Box::new(orphan)];
    }
    // The check made this process its subreaper: the orphan is its child now.
    drop(orphan);
    Vec::new()
}

/// Synchronous code that builds the process's first tokio runtime (as a blocking HTTP client
/// does): tokio's process-wide signal socket pair is not the test's leak.
fn sync_builds_a_runtime(leaky: bool) -> Leftovers {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::task::yield_now().await });
    if leaky {
        // The bug: the runtime (and its driver) is kept.
        return vec![Box::new(rt)];
    }
    drop(rt);
    Vec::new()
}

/// A task that blocks its worker thread: the task dump cannot finish, and leakcheck's own dump
/// thread must not be reported.
fn task_blocks_its_worker(leaky: bool) -> BoxedBody {
    block(async move {
        let (tx, rx) = mpsc::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = rx.recv();
        });
        if leaky {
            return vec![Box::new(Release(tx)) as Box<dyn Send>];
        }
        drop(tx);
        task.await.unwrap();
        Vec::new()
    })
}

fn blocked_worker_timeouts(b: CheckBuilder) -> CheckBuilder {
    b.settle_deadline(Duration::from_millis(100))
        .dump_timeout(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_millis(100))
}

/// A thread spawned without a name from inside a task: it carries the worker's name.
fn unnamed_thread_from_task(leaky: bool) -> BoxedBody {
    block(async move {
        let (tx, rx) = mpsc::channel::<()>();
        let t = tokio::spawn(async move {
            std::thread::spawn(move || {
                let _ = rx.recv();
            })
        })
        .await
        .unwrap();
        if leaky {
            return vec![Box::new(Release(tx)) as Box<dyn Send>];
        }
        drop(tx);
        t.join().unwrap();
        Vec::new()
    })
}

/// A task on a paused clock: 10 ms of virtual time from its end (clean), or an hour (leaky).
fn paused_clock_sleeper(leaky: bool) -> BoxedBody {
    let wait = if leaky {
        Duration::from_secs(3600)
    } else {
        Duration::from_millis(10)
    };
    block(async move {
        tokio::spawn(tokio::time::sleep(wait));
        Vec::new()
    })
}

fn paused(b: CheckBuilder) -> Check {
    b.start_current_thread_paused().expect("start check")
}

/// A task waiting on a `watch` channel, allowed by an await-point rule.
fn watch_waiter(leaky: bool) -> BoxedBody {
    block(async move {
        let (tx, mut rx) = tokio::sync::watch::channel(0u32);
        let task = tokio::spawn(async move { while rx.changed().await.is_ok() {} });
        tokio::task::yield_now().await;
        if leaky {
            return vec![Box::new(tx) as Box<dyn Send>];
        }
        drop(tx);
        task.await.unwrap();
        Vec::new()
    })
}

fn allow_watch(b: CheckBuilder) -> CheckBuilder {
    b.allow(
        Rule::builder(
            "config-watcher",
            "waits for configuration changes for the life of the process",
        )
        .kind(Kind::Task)
        .await_point("watch")
        .build()
        .unwrap(),
    )
}

/// An accept loop left running: its listening socket is closed only by the runtime's shutdown.
fn accept_loop(leaky: bool) -> BoxedBody {
    block(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let task = tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        tokio::task::yield_now().await;
        if !leaky {
            task.abort();
            let _ = task.await;
        }
        Vec::new()
    })
}

/// Stands for a library's shared executor (hyper-util's `TokioExecutor`): every task of a
/// client goes through one spawn call, whatever it does.
pub mod executor_lib {
    pub fn execute(f: impl std::future::Future<Output = ()> + Send + 'static) {
        tokio::spawn(f);
    }
}

/// A pool of different tasks through one executor function: connections waiting for requests,
/// a reaper on a timer, a dispatcher on a `Notify`. The leaky variant keeps them all; the clean
/// one stops them and waits for each to end.
fn shared_executor_pool(leaky: bool) -> BoxedBody {
    block(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
        let mut keep: Leftovers = Vec::new();
        for _ in 0..3 {
            let (req_tx, mut requests) = tokio::sync::mpsc::channel::<u32>(1);
            keep.push(Box::new(req_tx));
            let (mut stop, done) = (stop.clone(), done_tx.clone());
            executor_lib::execute(async move {
                tokio::select! {
                    _ = async { while requests.recv().await.is_some() {} } => {}
                    _ = stop.changed() => {}
                }
                drop(done);
            });
        }
        let (mut s, d) = (stop.clone(), done_tx.clone());
        executor_lib::execute(async move {
            tokio::select! {
                _ = async { loop { tokio::time::sleep(Duration::from_secs(3600)).await } } => {}
                _ = s.changed() => {}
            }
            drop(d);
        });
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let (n, mut s, d) = (notify.clone(), stop, done_tx);
        executor_lib::execute(async move {
            tokio::select! {
                _ = n.notified() => {}
                _ = s.changed() => {}
            }
            drop(d);
        });
        keep.push(Box::new(notify));
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        if leaky {
            keep.push(Box::new(stop_tx));
            return keep;
        }
        stop_tx.send(true).unwrap();
        // Every task dropped its `done` sender: all have ended.
        let _ = done.recv().await;
        Vec::new()
    })
}

fn short_deadline_20ms(b: CheckBuilder) -> CheckBuilder {
    b.settle_deadline(Duration::from_millis(20))
}

type BoxedBody = Pin<Box<dyn Future<Output = Leftovers> + Send>>;

fn block(f: impl Future<Output = Leftovers> + Send + 'static) -> BoxedBody {
    Box::pin(f)
}

macro_rules! exp {
    ($kind:ident, $component:expr, $desc:expr) => {
        Expected {
            kind: Kind::$kind,
            component: $component,
            description: $desc,
            known_as: None,
        }
    };
    ($kind:ident, $component:expr, $desc:expr, known $rule:expr) => {
        Expected {
            kind: Kind::$kind,
            component: $component,
            description: $desc,
            known_as: Some($rule),
        }
    };
}

/// The corpus.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "infinite_loop_task",
        configure: same,
        start: multi,
        body: Body::Async(infinite_loop),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "channel_sender_kept_alive",
        configure: same,
        start: current,
        body: Body::Async(channel_blocked),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "interval_never_cancelled",
        configure: same,
        start: multi,
        body: Body::Async(interval_loop),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "pool_close_skips_dispatcher",
        configure: same,
        start: multi,
        body: Body::Async(pool_dispatcher),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "stuck_spawn_blocking",
        configure: |b| b.shutdown_timeout(Duration::from_millis(100)),
        start: multi,
        body: Body::Async(stuck_spawn_blocking),
        expected: &[
            exp!(Thread, "tokio (checked runtime)", "stuck spawn_blocking"),
            // The blocked thread keeps the runtime's drivers alive.
            exp!(Fd, "tokio (checked runtime)", "eventpoll"),
            exp!(Fd, "tokio (checked runtime)", "eventfd"),
            exp!(Fd, "tokio (checked runtime)", "unix"),
        ],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "std_thread_never_joined",
        configure: same,
        start: sync,
        body: Body::Sync(std_thread),
        expected: &[exp!(
            Thread,
            "leakcheck-tests::scenarios",
            "thread `orphan-worker`"
        )],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "unnamed_thread_never_joined",
        configure: same,
        start: sync,
        body: Body::Sync(unnamed_thread),
        expected: &[exp!(Thread, "unnamed thread", "spawned without a name")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "tcp_connection_left_open",
        configure: same,
        start: sync,
        body: Body::Sync(tcp_left_open),
        expected: &[exp!(Fd, "leakcheck-tests::scenarios", "tcp 127.0.0.1:")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "child_left_running",
        configure: same,
        start: sync,
        body: Body::Sync(child_running),
        expected: &[exp!(Child, "sleep", "sleep 30")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "child_never_waited",
        configure: same,
        start: sync,
        body: Body::Sync(child_never_waited),
        expected: &[exp!(Child, "true", "never waited for")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "file_left_open",
        configure: same,
        start: sync,
        body: Body::Sync(file_left_open),
        expected: &[exp!(
            Fd,
            "leakcheck-tests::scenarios",
            "leakcheck-scenario-"
        )],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "task_lingers_50ms",
        configure: same,
        start: multi,
        body: Body::Async(lingers_50ms),
        expected: &[],
        leaky_passes: true,
        notes: &[],
    },
    Scenario {
        name: "task_exits_after_deadline",
        configure: short_deadline,
        start: multi,
        body: Body::Async(exits_after_deadline),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "known_singleton",
        configure: allow_metrics,
        start: multi,
        body: Body::Async(known_singleton),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs", known "metrics-ticker")],
        leaky_passes: true,
        notes: &[],
    },
    Scenario {
        name: "task_spawned_by_leaked_task",
        configure: same,
        start: multi,
        body: Body::Async(spawned_by_leaked),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "join_handle_dropped_on_pending",
        configure: same,
        start: current,
        body: Body::Async(forgotten_pending),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "local_set_forgotten",
        configure: same,
        start: current,
        body: Body::Async(local_set_forgotten),
        expected: &[exp!(
            Task,
            THIS_FILE,
            "LocalSet task spawned at tests/src/scenarios.rs"
        )],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "orphaned_grandchild",
        configure: same,
        start: sync,
        body: Body::Sync(orphaned_grandchild),
        expected: &[exp!(Child, "sleep", "sleep 30")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "sync_check_builds_first_runtime",
        configure: same,
        start: sync,
        body: Body::Sync(sync_builds_a_runtime),
        expected: &[
            exp!(Fd, "leakcheck-tests::scenarios", "eventpoll"),
            exp!(Fd, "leakcheck-tests::scenarios", "eventfd"),
            // The runtime's signal driver's copy of tokio's process-wide receiver.
            exp!(Fd, "leakcheck-tests::scenarios", "unix"),
        ],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "task_blocks_its_worker",
        configure: blocked_worker_timeouts,
        start: multi,
        body: Body::Async(task_blocks_its_worker),
        expected: &[
            exp!(Task, THIS_FILE, "tests/src/scenarios.rs"),
            exp!(
                Thread,
                "tokio (checked runtime)",
                "a worker of the checked runtime"
            ),
            // The blocked worker keeps the runtime's drivers alive.
            exp!(Fd, "tokio (checked runtime)", "eventpoll"),
            exp!(Fd, "tokio (checked runtime)", "eventfd"),
            exp!(Fd, "tokio (checked runtime)", "unix"),
        ],
        leaky_passes: false,
        notes: &["the task dump did not finish"],
    },
    Scenario {
        name: "unnamed_thread_from_task",
        configure: same,
        start: multi,
        body: Body::Async(unnamed_thread_from_task),
        expected: &[exp!(
            Thread,
            "unnamed thread",
            "from inside the checked runtime"
        )],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "paused_clock_sleeper",
        configure: same,
        start: paused,
        body: Body::Async(paused_clock_sleeper),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
    Scenario {
        name: "await_point_rule_allows_watch",
        configure: allow_watch,
        start: multi,
        body: Body::Async(watch_waiter),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs", known "config-watcher")],
        leaky_passes: true,
        notes: &[],
    },
    Scenario {
        name: "accept_loop_left_running",
        configure: same,
        start: multi,
        body: Body::Async(accept_loop),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &["held by the leaked task(s)", "tcp 127.0.0.1:"],
    },
    Scenario {
        name: "shared_executor_pool",
        configure: short_deadline_20ms,
        start: multi,
        body: Body::Async(shared_executor_pool),
        expected: &[exp!(Task, THIS_FILE, "tests/src/scenarios.rs")],
        leaky_passes: false,
        notes: &[],
    },
];

/// Finds a scenario by name.
pub fn scenario(name: &str) -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario `{name}`"))
}
