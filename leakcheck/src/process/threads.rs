//! OS threads of this process from `/proc/self/task`.

use std::collections::HashSet;

/// One live thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Thread {
    pub(crate) tid: i32,
    /// Start time in clock ticks since boot: with the tid, an identity that survives tid reuse.
    /// 0 for the thread that listed it (it runs the check, so it predates it).
    pub(crate) start: u64,
    pub(crate) name: String,
}

pub(crate) fn threads() -> Vec<Thread> {
    threads_but(&HashSet::new())
}

/// The live threads; those in `unread` (threads waiting for a leak check's turn, which no check
/// counts) are listed without reading their `stat` file: start time 0, no name.
pub(crate) fn threads_but(unread: &HashSet<i32>) -> Vec<Thread> {
    super::TASK_DIR
        .scan(|task| scan_threads(task, unread))
        .unwrap_or_default()
}

fn scan_threads(task: &super::ProcDir, unread: &HashSet<i32>) -> Vec<Thread> {
    let (me, main) = (current_tid(), std::process::id() as i32);
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let known = known.get_or_insert_with(Default::default);
    if known.len() > KNOWN_MAX {
        known.clear();
    }
    let mut out = Vec::new();
    for (tid, ino) in task.threads() {
        // This thread and the main one are known without a read. This one is running the
        // check, so it is never new: start time 0 (before any baseline); its name comes from
        // the kernel. The main one's start time never changes, and its name is never changed.
        if tid == me {
            out.push(Thread {
                tid,
                start: 0,
                name: current_thread_name(),
            });
            continue;
        } else if tid == main {
            if let Some(start) = main_start() {
                out.push(Thread {
                    tid,
                    start,
                    name: main_thread_name().to_string(),
                });
                continue;
            }
        }
        if unread.contains(&tid) {
            out.push(Thread {
                tid,
                start: 0,
                name: String::new(),
            });
            continue;
        }
        // Read before the name: a rename after this is seen at the next scan.
        let renames = super::renames(tid);
        if let Some((start, name, _)) = known
            .get(&(tid, ino))
            .filter(|(_, _, r)| renames.is_some_and(|now| now == *r))
        {
            out.push(Thread {
                tid,
                start: *start,
                name: name.clone(),
            });
            continue;
        }
        // The thread may exit between listing and reading: then it is simply not alive.
        let Some(st) = task.stat(&format!("{tid}/stat")) else {
            continue;
        };
        if let Some(r) = renames {
            known.insert((tid, ino), (st.start, st.comm.clone(), r));
        }
        out.push(Thread {
            tid,
            start: st.start,
            name: st.comm,
        });
    }
    out
}

/// Threads seen before, by tid and inode in `/proc/self/task`: their start time, and their
/// name as of a count of renames (see [`super::renames`]). A thread's `stat` file is the
/// costliest read of a scan, and most threads outlive many checks (a harness's test threads,
/// a client's workers). Renames through `prctl` are not counted: such a name is seen once the
/// entry is read again.
static KNOWN: std::sync::Mutex<Option<KnownThreads>> = std::sync::Mutex::new(None);
type KnownThreads = rustc_hash::FxHashMap<(i32, u64), (u64, String, u64)>;
const KNOWN_MAX: usize = 4096;

/// The main thread's start time: the process's (kept with its pid, for a forked child).
fn main_start() -> Option<u64> {
    static START: std::sync::Mutex<Option<(u32, u64)>> = std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut cached = START.lock().unwrap_or_else(|e| e.into_inner());
    match *cached {
        Some((p, start)) if p == pid => Some(start),
        _ => {
            let start = super::stat("/proc/self/stat")?.start;
            *cached = Some((pid, start));
            Some(start)
        }
    }
}

pub(crate) fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// This thread's name as the kernel keeps it (15 bytes at most), without reading `/proc`.
pub(crate) fn current_thread_name() -> String {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `buf`.
        if unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr()) } == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    super::stat(&format!("/proc/self/task/{}/stat", current_tid()))
        .map(|s| s.comm)
        .unwrap_or_default()
}

/// The main thread's name, read once: test harnesses never rename it.
pub(crate) fn main_thread_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        super::stat("/proc/self/stat")
            .map(|s| s.comm)
            .unwrap_or_default()
    })
}

/// Threads leakcheck itself started (its dump and symbol helpers), as (tid, start time): never a
/// survivor.
static OWN: std::sync::Mutex<Vec<(i32, u64)>> = std::sync::Mutex::new(Vec::new());

/// Spawns a thread of leakcheck's own: it is recorded before it runs `f`, so no check ever
/// counts it as its test's.
pub(crate) fn spawn_own<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            mark_own();
            let _ = ready_tx.send(());
            f()
        })?;
    let _ = ready_rx.recv();
    Ok(handle)
}

/// Records the calling thread as one of leakcheck's own.
pub(crate) fn mark_own() {
    let tid = current_tid();
    if let Some(st) = super::stat(&format!("/proc/self/task/{tid}/stat")) {
        OWN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tid, st.start));
    }
}

/// Whether `t` is one of leakcheck's own threads, or a thread one of them started without a
/// name (it carries its creator's name: tokio starts one from a dump's thread).
pub(crate) fn is_own(t: &Thread) -> bool {
    [DUMP_THREAD_NAME, SYMBOLS_THREAD_NAME].contains(&t.name.as_str())
        || OWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(t.tid, t.start))
}

/// The name of the thread that takes task dumps.
pub(crate) const DUMP_THREAD_NAME: &str = "leakcheck-dump";
/// The name of the thread that resolves survivors' symbols while a check waits.
pub(crate) const SYMBOLS_THREAD_NAME: &str = "leakcheck-symbols";

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread named in `unread` (one waiting for a turn) is listed without a read: start time
    /// 0, no name; other scans read it.
    #[test]
    fn unread_threads_are_listed_without_their_stat() {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel::<i32>();
        let t = std::thread::Builder::new()
            .name("waits-a-turn".into())
            .spawn(move || {
                tell.send(current_tid()).unwrap();
                let _ = stopped.recv();
            })
            .unwrap();
        let tid = told.recv().unwrap();
        let find = |list: Vec<Thread>| list.into_iter().find(|t| t.tid == tid).unwrap();
        let unread = find(threads_but(&HashSet::from([tid])));
        assert_eq!((unread.start, unread.name.as_str()), (0, ""));
        let read = find(threads());
        assert!(read.start > 0);
        assert_eq!(read.name, "waits-a-turn");
        drop(stop);
        t.join().unwrap();
    }

    /// A thread seen by one scan and renamed before the next is listed under its new name.
    #[test]
    fn a_renamed_thread_is_read_again() {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel::<i32>();
        let t = std::thread::Builder::new()
            .name("before-rename".into())
            .spawn(move || {
                tell.send(current_tid()).unwrap();
                asked.recv().unwrap();
                // SAFETY: a NUL-terminated name of at most 15 bytes, for this thread.
                unsafe { libc::pthread_setname_np(libc::pthread_self(), c"after-rename".as_ptr()) };
                tell.send(0).unwrap();
                asked.recv().unwrap();
            })
            .unwrap();
        let tid = told.recv().unwrap();
        let name = |tid| threads().into_iter().find(|t| t.tid == tid).map(|t| t.name);
        assert_eq!(name(tid).as_deref(), Some("before-rename"));
        assert_eq!(name(tid).as_deref(), Some("before-rename"));
        ask.send(()).unwrap();
        told.recv().unwrap();
        assert_eq!(name(tid).as_deref(), Some("after-rename"));
        ask.send(()).unwrap();
        t.join().unwrap();
    }

    /// Threads exiting while the process's threads are listed (each right before a thread that
    /// lives on, as a test's short-lived threads sit before a leaked one): Linux cuts such a
    /// listing short and skips live threads (see `ProcDir::threads`); every listing must still
    /// hold every live one.
    #[test]
    fn a_listing_holds_every_live_thread_while_others_exit() {
        let mut scans = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(2) {
            let go = std::sync::Arc::new(std::sync::Barrier::new(61));
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let stopped = std::sync::Arc::new(std::sync::Mutex::new(stopped));
            let (tell, told) = std::sync::mpsc::channel::<i32>();
            let mut exiting = Vec::new();
            let mut living = Vec::new();
            for i in 0..60u64 {
                let go = go.clone();
                exiting.push(std::thread::spawn(move || {
                    go.wait();
                    let t = std::time::Instant::now();
                    while t.elapsed() < std::time::Duration::from_micros(15 * i) {}
                }));
                let (stopped, tell) = (stopped.clone(), tell.clone());
                living.push(std::thread::spawn(move || {
                    tell.send(current_tid()).unwrap();
                    let _ = stopped.lock().unwrap().recv();
                }));
            }
            let live: Vec<i32> = (0..60).map(|_| told.recv().unwrap()).collect();
            go.wait();
            while !exiting.iter().all(|e| e.is_finished()) {
                scans += 1;
                let listed: HashSet<i32> = threads().into_iter().map(|t| t.tid).collect();
                let missed: Vec<_> = live.iter().filter(|t| !listed.contains(t)).collect();
                assert!(
                    missed.is_empty(),
                    "scan {scans} missed live threads {missed:?}"
                );
            }
            for e in exiting {
                e.join().unwrap();
            }
            drop(stop);
            for l in living {
                l.join().unwrap();
            }
        }
    }
}
