//! OS threads of this process from `/proc/self/task`.

/// One live thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Thread {
    pub(crate) tid: i32,
    /// Start time in clock ticks since boot: with the tid, an identity that survives tid reuse.
    pub(crate) start: u64,
    pub(crate) name: String,
}

pub(crate) fn threads() -> Vec<Thread> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // The thread may exit between listing and reading: then it is simply not alive.
        let Some(st) = super::stat(&format!("/proc/self/task/{tid}/stat")) else {
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
