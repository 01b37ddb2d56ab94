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
        let Some((name, rest)) = super::stat_fields(&format!("/proc/self/task/{tid}/stat")) else {
            continue;
        };
        // Field 22 (starttime) is the 20th after the command name.
        let start = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push(Thread { tid, start, name });
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
