//! Child processes of this process, found by scanning `/proc/*/stat` for our pid as parent.
//! The scan reads every process of the machine, so it is skipped when the process has no child
//! at all (one `waitid` call says so).

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
    if !has_children() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(st) = super::stat(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        if st.ppid != me {
            continue;
        }
        let (comm, state, start) = (st.comm, st.state, st.start);
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

/// Whether this process has any child, running or exited: `waitid` fails with `ECHILD` when it
/// has none. `WNOWAIT` leaves every child waitable by its owner.
fn has_children() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter; WNOHANG makes the call return at
        // once and WNOWAIT reaps nothing.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_and_knows_when_there_is_none() {
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children();
        c.kill().unwrap();
        c.wait().unwrap();
        // Right after exec the command line can still be empty: the name is the fallback.
        assert!(
            found
                .iter()
                .any(|ch| ch.pid == c.id() as i32 && ch.cmdline.starts_with("sleep")),
            "{:?}",
            found.iter().map(|c| &c.cmdline).collect::<Vec<_>>()
        );
        // Other tests of this binary may have children of their own at this moment; the
        // no-child path is exercised by every check that spawns nothing.
    }
}
