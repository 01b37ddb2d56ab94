//! OS threads of this process from `/proc/self/task`.

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
    let Some(task) = super::ProcDir::open("/proc/self/task") else {
        return Vec::new();
    };
    let (me, main) = (current_tid(), std::process::id() as i32);
    let mut out = Vec::new();
    for tid in task.numbers() {
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
        // The thread may exit between listing and reading: then it is simply not alive.
        let Some(st) = task.stat(&format!("{tid}/stat")) else {
            continue;
        };
        out.push(Thread {
            tid,
            start: st.start,
            name: st.comm,
        });
    }
    out
}

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
