//! Process-wide resources: OS threads, file descriptors and child processes, read from `/proc`.
//!
//! Each is identified so that reuse is not mistaken for survival: a thread by tid and start time,
//! a descriptor by number and target, a child by pid and start time.
//! A listing of threads is checked against the process's thread count (Linux can skip live
//! threads in it while others exit: see [`ProcDir::threads`]).

mod children;
mod fds;
mod libtest;
mod origins;
mod threads;

pub(crate) use children::{adopt_orphans, children, AdoptOrphans, Child};
pub(crate) use fds::{fds, note_own_file, Fd, OwnFd};
pub(crate) use libtest::{list_tests, sibling_test_names, truncate};
pub(crate) use origins::{made, renames, unrecorded, Made, Recording};
pub(crate) use threads::{
    current_thread_name, current_tid, is_own, main_thread_name, mark_own, spawn_own, threads,
    threads_but, Thread, DUMP_THREAD_NAME, SYMBOLS_THREAD_NAME,
};

/// How many listings of threads did not add up in [`RELISTS`] tries (threads kept starting and
/// exiting while they were read): each may have missed a live thread. A check reports it.
static UNSETTLED_LISTINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
thread_local! {
    /// Makes every listing of threads on this thread not add up (tests of what follows).
    pub(crate) static UNSETTLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Held by the tests that set [`UNSETTLE`], which count [`UNSETTLED_LISTINGS`] (process-wide).
#[cfg(test)]
pub(crate) static UNSETTLE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`UNSETTLED_LISTINGS`] so far.
pub(crate) fn unsettled_listings() -> u64 {
    UNSETTLED_LISTINGS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `/proc` can be read on this platform.
pub(crate) fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        cfg!(target_os = "linux") && std::path::Path::new("/proc/self/task").exists()
    })
}

/// Now, in the clock ticks since boot that `/proc` start times use. A thread or process whose
/// start time is below this value existed before now, whatever a listing of `/proc` showed.
pub(crate) fn boot_ticks() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf and clock_gettime have no preconditions; `ts` is a valid out-param.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u128;
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
            return 0;
        }
        let ns = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
        (ns * hz / 1_000_000_000) as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The fields of `/proc/<pid>/stat` (or a task's) that leakcheck uses.
pub(crate) struct Stat {
    pub(crate) comm: String,
    /// `R`, `S`, `Z`, ...
    pub(crate) state: char,
    pub(crate) ppid: i32,
    /// Start time in clock ticks since boot.
    pub(crate) start: u64,
}

/// Reads a stat file into a stack buffer and parses only what [`Stat`] holds: this runs for
/// every thread at every settle round.
pub(crate) fn stat(path: &str) -> Option<Stat> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    parse_stat(&buf[..n])
}

/// A `/proc` directory open for a scan: its entries are read relative to it (`openat`,
/// `readlinkat`), which spares the kernel a walk of the whole path per entry. Borrowed from a
/// [`KeptDir`].
pub(crate) struct ProcDir(libc::c_int);

/// A directory of `/proc/self` kept open from scan to scan, rewound before each: opening one
/// costs more than listing it. Its descriptor is leakcheck's own ([`KeptDir::fd`]): scans of
/// descriptors leave it out.
pub(crate) struct KeptDir {
    path: &'static std::ffi::CStr,
    /// (pid, descriptor, device, inode): the descriptor is used only while this process
    /// (not a forked child) has it open on this directory.
    open: std::sync::Mutex<Option<(u32, libc::c_int, u64, u64)>>,
}

/// How many times a listing of threads that does not add up is read again (see
/// [`ProcDir::threads`]): a try fails only when a thread starts or exits while it is read.
pub(crate) const RELISTS: usize = 16;

pub(crate) static TASK_DIR: KeptDir = KeptDir::new(c"/proc/self/task");
pub(crate) static FD_DIR: KeptDir = KeptDir::new(c"/proc/self/fd");

impl KeptDir {
    const fn new(path: &'static std::ffi::CStr) -> Self {
        KeptDir {
            path,
            open: std::sync::Mutex::new(None),
        }
    }

    /// Runs `f` on the directory, rewound; `None` when it cannot be opened.
    pub(crate) fn scan<R>(&self, f: impl FnOnce(&ProcDir) -> R) -> Option<R> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let still =
            open.is_some_and(|(p, fd, dev, ino)| p == pid && identity(fd) == Some((dev, ino)));
        if !still {
            // A descriptor of the parent (in a forked child), or one the program closed: it is
            // not closed here, the number may be someone else's now.
            // SAFETY: a NUL-terminated path; the descriptor is kept for the process's life.
            let fd = unsafe {
                libc::open(
                    self.path.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            let (dev, ino) = identity(fd)?;
            *open = Some((pid, fd, dev, ino));
        }
        let (_, fd, _, _) = (*open)?;
        // SAFETY: rewinds a directory descriptor this process holds.
        if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
            return None;
        }
        Some(f(&ProcDir(fd)))
    }

    /// The kept descriptor, if open.
    pub(crate) fn fd(&self) -> Option<libc::c_int> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.filter(|(p, ..)| *p == std::process::id())
            .map(|(_, fd, ..)| fd)
    }
}

/// A descriptor's device and inode.
fn identity(fd: libc::c_int) -> Option<(u64, u64)> {
    fstat(fd).map(|st| (st.st_dev, st.st_ino))
}

/// `fstat` of an open descriptor; `None` for one that is not (or a negative number).
pub(crate) fn fstat(fd: libc::c_int) -> Option<libc::stat> {
    if fd < 0 {
        return None;
    }
    // SAFETY: fstat writes into `st`; a closed descriptor fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

impl ProcDir {
    /// The numeric entry names (descriptor numbers), read with `getdents64` on this
    /// directory's own descriptor: no second open for the listing.
    pub(crate) fn numbers(&self) -> Vec<i32> {
        self.list().into_iter().map(|(n, _)| n).collect()
    }

    /// The threads of `/proc/self/task`: numeric entries with their inode numbers. A thread's
    /// inode stays while it lives and is new for a new thread, even one that reuses a tid.
    ///
    /// Linux ends a listing of this directory early when the thread it stands on exits
    /// meanwhile (listed already, or not yet), and a read after that resumes by counting
    /// threads from the first, one of which is gone: live threads are skipped, the newest ones
    /// most often (`proc_task_readdir`, `next_tid`). A listing is therefore taken only when it
    /// holds as many threads as the directory's link count says the process has, before and
    /// after it; otherwise it is read again from the start, up to [`RELISTS`] times (a count
    /// adds up over a cut listing only if threads start as others exit during the read). After
    /// that the entries of every try that are still there (same number, same inode) are kept.
    pub(crate) fn threads(&self) -> Vec<(i32, u64)> {
        let mut tried: Vec<(i32, u64)> = Vec::new();
        for attempt in 0..RELISTS {
            // SAFETY: rewinds a directory descriptor this process holds.
            if attempt > 0 && unsafe { libc::lseek(self.raw(), 0, libc::SEEK_SET) } != 0 {
                break;
            }
            let before = self.thread_count();
            let list = self.list();
            let after = self.thread_count();
            #[cfg(test)]
            let after = after.filter(|_| !UNSETTLE.get());
            if before.is_some() && before == after && after == Some(list.len() as u64) {
                return list;
            }
            tried.extend(list);
        }
        UNSETTLED_LISTINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tried.sort_unstable();
        tried.dedup();
        tried.retain(|&(n, ino)| self.inode(n) == Some(ino));
        tried
    }

    /// The process's thread count, from the link count of `/proc/<pid>/task` (two links of
    /// its own, plus one per thread).
    #[allow(clippy::unnecessary_cast)] // `st_nlink` is a u32 on aarch64
    fn thread_count(&self) -> Option<u64> {
        fstat(self.raw()).and_then(|st| (st.st_nlink as u64).checked_sub(2))
    }

    /// One listing from the current position: the numeric entries with their inodes.
    fn list(&self) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: getdents64 writes at most `buf.len()` bytes of records into `buf`.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.raw(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return out;
            };
            if n == 0 {
                return out;
            }
            // Records: d_ino (8), d_off (8), d_reclen (2), d_type (1), NUL-terminated name.
            let mut at = 0;
            while at + 19 < n {
                let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
                if reclen == 0 {
                    return out;
                }
                let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
                let name = &buf[at + 19..(at + reclen).min(n)];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if let Some(k) = std::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
                    out.push((k, ino));
                }
                at += reclen;
            }
        }
    }

    /// The inode of the numeric entry `n`, if it is there.
    fn inode(&self, n: i32) -> Option<u64> {
        let name = std::ffi::CString::new(n.to_string()).ok()?;
        // SAFETY: fstatat writes into `st`; a NUL-terminated name under an open directory.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstatat(self.raw(), name.as_ptr(), &mut st, 0) } == 0).then_some(st.st_ino)
    }

    pub(crate) fn raw(&self) -> libc::c_int {
        self.0
    }

    /// The `stat` file at `rel` (`"<tid>/stat"`), parsed.
    pub(crate) fn stat(&self, rel: &str) -> Option<Stat> {
        let rel = std::ffi::CString::new(rel).ok()?;
        let mut buf = [0u8; 1024];
        // SAFETY: a NUL-terminated relative path under an open directory; reads into `buf`
        // within its length; the descriptor is closed before returning.
        let n = unsafe {
            let fd = libc::openat(self.raw(), rel.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        };
        parse_stat(buf.get(..usize::try_from(n).ok()?)?)
    }

    /// The target of the link `name` in this directory.
    pub(crate) fn readlink(&self, name: &str) -> Option<String> {
        let name = std::ffi::CString::new(name).ok()?;
        let mut buf = [0u8; 4096];
        // SAFETY: a NUL-terminated name under an open directory; writes within `buf`.
        let n = unsafe {
            libc::readlinkat(
                self.raw(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let n = usize::try_from(n).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn parse_stat(s: &[u8]) -> Option<Stat> {
    let open = s.iter().position(|b| *b == b'(')?;
    let close = s.iter().rposition(|b| *b == b')')?;
    let comm = String::from_utf8_lossy(s.get(open + 1..close)?).into_owned();
    // After the name: state (field 3), ppid (4), ..., starttime (22).
    let mut rest = s
        .get(close + 1..)?
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    let state = *rest.next()?.first()? as char;
    let ppid = std::str::from_utf8(rest.next()?).ok()?.parse().ok()?;
    let start = std::str::from_utf8(rest.nth(17)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_and_parens_in_the_name() {
        let line = b"4242 (my (odd) name) S 17 4242 17 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 123 456\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "my (odd) name");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 17);
        assert_eq!(s.start, 98765);
    }

    #[test]
    fn start_times_are_below_the_tick_clock() {
        // This process may have started in the current tick: let a tick pass first.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = boot_ticks();
        let me = stat("/proc/self/stat").unwrap();
        assert!(me.start < before, "{} !< {before}", me.start);
        let t = std::thread::spawn(|| {
            stat(&format!("/proc/self/task/{}/stat", super::current_tid()))
                .unwrap()
                .start
        })
        .join()
        .unwrap();
        assert!(t >= before, "{t} < {before}");
    }

    /// A listing that never adds up is still a listing (every try's threads that are still
    /// there), and it is counted, so that a check can say its verdict on threads is not proof.
    #[test]
    fn a_listing_that_does_not_add_up_is_counted() {
        let _alone = UNSETTLE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let before = unsettled_listings();
        UNSETTLE.set(true);
        let listed = threads();
        UNSETTLE.set(false);
        assert!(listed.iter().any(|t| t.tid == current_tid()));
        assert!(unsettled_listings() > before);
    }

    /// A program that closes the kept directory's descriptor and reuses its number: scans go
    /// on (the directory is opened again) and never touch the program's new descriptor.
    #[test]
    fn a_kept_directory_closed_by_the_program_is_opened_again() {
        assert!(threads().iter().any(|t| t.tid == current_tid()));
        let kept = TASK_DIR.fd().expect("kept open");
        let file = {
            // No scan of a test running beside this one uses it meanwhile.
            let _scans = TASK_DIR.open.lock().unwrap();
            // SAFETY: closes the kept descriptor behind leakcheck's back, as a program might.
            unsafe { libc::close(kept) };
            std::fs::File::open("/proc/self/stat").unwrap()
        };
        use std::os::fd::AsRawFd;
        let reused = file.as_raw_fd() == kept;
        assert!(threads().iter().any(|t| t.tid == current_tid()));
        assert_ne!(TASK_DIR.fd(), Some(file.as_raw_fd()));
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of the program's own open file.
        assert_eq!(
            unsafe { libc::fstat(file.as_raw_fd(), &mut st) },
            0,
            "reused: {reused}"
        );
        assert!(fds().iter().all(|f| Some(f.fd) != TASK_DIR.fd()));
    }

    #[test]
    fn reads_this_process() {
        let s = stat("/proc/self/stat").unwrap();
        assert_eq!(s.ppid as u32, std::os::unix::process::parent_id());
        assert!(s.start > 0);
    }
}
