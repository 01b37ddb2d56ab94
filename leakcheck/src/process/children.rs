//! Child processes of this process, found by scanning `/proc/*/stat` for our pid as parent.

/// One live (or zombie) child process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    pub(crate) start: u64,
    /// `R`, `S`, `Z` (exited, not waited for), ...
    pub(crate) state: char,
    pub(crate) cmdline: String,
}

pub(crate) fn children() -> Vec<Child> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some((comm, rest)) = super::stat_fields(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if rest.get(1).and_then(|p| p.parse::<i32>().ok()) != Some(me) {
            continue;
        }
        let state = rest.first().and_then(|s| s.chars().next()).unwrap_or('?');
        let start = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|c| !c.is_empty())
            .unwrap_or(comm);
        out.push(Child {
            pid,
            start,
            state,
            cmdline,
        });
    }
    out
}
