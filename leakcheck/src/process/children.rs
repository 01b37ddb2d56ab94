//! Child processes of this process, found by scanning `/proc/*/stat` for our pid as parent.
//! The scan reads every process of the machine, so it is skipped when the process has no child
//! at all (one `waitid` call says so).

/// One live (or zombie) child process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    pub(crate) start: u64,
    pub(crate) state: char,
    pub(crate) cmdline: String,
    /// The process that started it, when that is not the test process: (pid, command line).
    pub(crate) parent: Option<(i32, String)>,
    /// Whether its parent exited and it was re-parented to this process (then `parent` is the
    /// one it had when last seen, if it was seen).
    pub(crate) orphan: bool,
}

/// The parent each descendant had when it was seen, for orphans re-parented later.
static PARENTS: std::sync::Mutex<Vec<(ProcessKey, Parent)>> = std::sync::Mutex::new(Vec::new());

/// A process: (pid, start time).
type ProcessKey = (i32, u64);
/// A parent: (pid, command line).
type Parent = (i32, String);

/// Every descendant of this process: its children, their children, and so on. Orphans of a
/// descendant are included while [`adopt_orphans`] is on (they become children of this
/// process instead of init's).
pub(crate) fn children() -> Vec<Child> {
    if !has_children() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all: Vec<(i32, super::Stat)> = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(st) = super::stat(&format!("/proc/{pid}/stat")) {
            all.push((pid, st));
        }
    }
    // Breadth first from this process: parents come before their children.
    let mut out: Vec<Child> = Vec::new();
    let mut parents = vec![me];
    while !parents.is_empty() {
        let mut next = Vec::new();
        for (pid, st) in all.iter().filter(|(_, st)| parents.contains(&st.ppid)) {
            let parent = (st.ppid != me).then(|| {
                let cmd = out
                    .iter()
                    .find(|c| c.pid == st.ppid)
                    .map(|c| c.cmdline.clone())
                    .unwrap_or_default();
                (st.ppid, cmd)
            });
            let mut known = PARENTS.lock().unwrap_or_else(|e| e.into_inner());
            let key = (*pid, st.start);
            let (parent, orphan) = match parent {
                Some(p) => {
                    if !known.iter().any(|(k, _)| *k == key) {
                        known.push((key, p.clone()));
                    }
                    (Some(p), false)
                }
                None => match known.iter().find(|(k, _)| *k == key) {
                    Some((_, p)) => (Some(p.clone()), true),
                    None => (None, false),
                },
            };
            drop(known);
            out.push(Child {
                pid: *pid,
                start: st.start,
                state: st.state,
                cmdline: cmdline(*pid).unwrap_or_else(|| st.comm.clone()),
                parent,
                orphan,
            });
            next.push(*pid);
        }
        parents = next;
    }
    out
}

fn cmdline(pid: i32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`) while the guard lives: a
/// descendant whose parent exits is re-parented to this process, so a check still sees it (a
/// daemonized grandchild would otherwise escape to init). Such an orphan is this process's
/// child from then on: wait for it as for a child.
pub(crate) struct AdoptOrphans(bool);

pub(crate) fn adopt_orphans() -> AdoptOrphans {
    #[cfg(target_os = "linux")]
    {
        let mut was: libc::c_int = 0;
        // SAFETY: PR_GET/SET_CHILD_SUBREAPER read and set a flag of this process.
        unsafe {
            libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut was as *mut libc::c_int);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
        }
        AdoptOrphans(was != 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        AdoptOrphans(true)
    }
}

impl Drop for AdoptOrphans {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if !self.0 {
            // SAFETY: as above.
            unsafe {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0 as libc::c_ulong);
            }
        }
    }
}

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
    fn finds_a_grandchild_and_an_orphan() {
        let _adopt = adopt_orphans();
        let mut sh = std::process::Command::new("sh")
            // The grandchild keeps no pipe of the test's; `sh` waits on its stdin until killed.
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!; read _"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let found = children();
        let g = found
            .iter()
            .find(|c| c.pid == grandchild)
            .expect("grandchild");
        assert_eq!(g.parent.as_ref().map(|p| p.0), Some(sh.id() as i32));
        assert!(g.parent.as_ref().unwrap().1.starts_with("sh -c"), "{g:?}");
        sh.kill().unwrap();
        sh.wait().unwrap();
        // Its parent is gone: adopted by this process, still found.
        let me = std::process::id() as i32;
        let mut adopted = false;
        for _ in 0..2000 {
            if super::super::stat(&format!("/proc/{grandchild}/stat")).map(|s| s.ppid) == Some(me) {
                adopted = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(adopted, "the orphan was not re-parented to this process");
        assert!(children().iter().any(|c| c.pid == grandchild
            && c.orphan
            && c.parent.as_ref().unwrap().0 == sh.id() as i32));
        unsafe {
            libc::kill(grandchild, libc::SIGKILL);
            libc::waitpid(grandchild, std::ptr::null_mut(), 0);
        }
    }

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
