//! File descriptors of this process from `/proc/self/fd`; sockets are resolved to protocol and
//! addresses from the descriptors themselves.

use std::net::SocketAddr;

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Fd {
    pub(crate) fd: i32,
    /// The `readlink` target: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:[eventfd]`...
    pub(crate) target: String,
    /// [`origins::fd_stamp`](super::origins::fd_stamp) before the target was read: the same
    /// number and target with another stamp is another descriptor.
    pub(crate) stamp: u64,
}

impl Fd {
    /// The descriptor's type, used as its component: `tcp`, `udp`, `unix`, `socket`, `pipe`,
    /// `eventfd`, `epoll`, `timerfd`, `file`...
    pub(crate) fn kind(&self) -> String {
        if let Some(inode) = inode_of(&self.target, "socket:[") {
            return socket_proto(self.fd, inode).to_string();
        }
        if self.target.starts_with("pipe:") {
            return "pipe".into();
        }
        if let Some(rest) = self.target.strip_prefix("anon_inode:") {
            return rest
                .trim_matches(|c| c == '[' || c == ']')
                .replace("eventpoll", "epoll");
        }
        if self.target.starts_with('/') {
            return "file".into();
        }
        "other".into()
    }

    /// A readable description: `tcp 127.0.0.1:40000 -> 127.0.0.1:9092 (ESTABLISHED)`.
    pub(crate) fn describe(&self) -> String {
        if let Some(inode) = inode_of(&self.target, "socket:[") {
            if let Some(s) = socket(self.fd, inode) {
                return s.to_string();
            }
        }
        self.target.clone()
    }
}

pub(crate) fn fds() -> Vec<Fd> {
    let task_dir = super::TASK_DIR.fd();
    super::FD_DIR
        .scan(|fd_dir| scan_fds(fd_dir, task_dir))
        .unwrap_or_default()
}

/// The descriptors listed in `fd_dir`, but for it and the kept `task_dir`.
fn scan_fds(fd_dir: &super::ProcDir, task_dir: Option<i32>) -> Vec<Fd> {
    let mut targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
    let targets = targets.get_or_insert_with(Default::default);
    if targets.len() > TARGETS_MAX {
        targets.clear();
    }
    let mut out = Vec::new();
    for fd in fd_dir.numbers() {
        if fd == fd_dir.raw() || Some(fd) == task_dir {
            continue;
        }
        let stamp = super::origins::fd_stamp(fd);
        let key = identity(fd);
        if key.is_some_and(|k| is_own_fd(k.0, k.1, k.2)) {
            continue;
        }
        let target = match key.and_then(|k| targets.get(&k)) {
            Some(t) => t.clone(),
            None => {
                // A descriptor closed since the listing is simply not open.
                let Some(target) = fd_dir.readlink(&fd.to_string()) else {
                    continue;
                };
                if let Some(k) = key {
                    targets.insert(k, target.clone());
                }
                target
            }
        };
        if crate::report::is_report_being_written(&target) || is_own_file(&target) {
            continue;
        }
        out.push(Fd { fd, target, stamp });
    }
    out
}

/// Descriptors leakcheck has open while other checks may run (a report being written), as
/// (number, device, inode): a scan leaves them out without reading their target.
static OWN_FDS: std::sync::Mutex<Vec<(i32, u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// Marks an open descriptor as leakcheck's own until dropped (drop it after closing the file).
pub(crate) struct OwnFd((i32, u64, u64));

impl OwnFd {
    pub(crate) fn new(file: &std::fs::File, meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let key = (file.as_raw_fd(), meta.dev(), meta.ino());
        OWN_FDS.lock().unwrap_or_else(|e| e.into_inner()).push(key);
        OwnFd(key)
    }
}

impl Drop for OwnFd {
    fn drop(&mut self) {
        OWN_FDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| *k != self.0);
    }
}

fn is_own_fd(fd: i32, dev: u64, ino: u64) -> bool {
    OWN_FDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&(fd, dev, ino))
}

/// Files leakcheck itself reads while other checks may run (configuration files): a check
/// never counts another's read of one.
static OWN_FILES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records `path` as a file leakcheck reads (by the path `/proc` shows for it).
pub(crate) fn note_own_file(path: &std::path::Path) {
    let Ok(real) = std::fs::canonicalize(path) else {
        return;
    };
    let real = real.to_string_lossy().into_owned();
    let mut own = OWN_FILES.lock().unwrap_or_else(|e| e.into_inner());
    if !own.contains(&real) {
        own.push(real);
    }
}

fn is_own_file(target: &str) -> bool {
    target.starts_with('/')
        && OWN_FILES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|f| f == target)
}

/// The `readlink` targets of descriptors seen before, by [`identity`]: a `readlink` in `/proc`
/// costs several times an `fstat`, and most descriptors outlive many checks (stdio, a
/// harness's pipes).
static TARGETS: std::sync::Mutex<Option<FdTargets>> = std::sync::Mutex::new(None);
type FdTargets = rustc_hash::FxHashMap<FdIdentity, String>;
const TARGETS_MAX: usize = 4096;

/// A descriptor's number, device, inode, type and change time: the same for one open file
/// from check to check, different when the number was closed and reused (a new pipe or socket
/// has a new inode; a file's change time is when it was made or last changed). `None` for an
/// anonymous inode (eventfd, epoll, timerfd): they share one inode, so their target is always
/// read.
type FdIdentity = (i32, u64, u64, u32, i64, i64);

#[cfg(target_os = "linux")]
fn identity(fd: i32) -> Option<FdIdentity> {
    let st = super::fstat(fd).filter(|st| st.st_mode & libc::S_IFMT != 0)?;
    Some((
        fd,
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_ctime,
        st.st_ctime_nsec,
    ))
}

#[cfg(not(target_os = "linux"))]
fn identity(_fd: i32) -> Option<FdIdentity> {
    None
}

/// A socket's protocol, remembered per inode: it never changes, and a socket inode is not
/// reused while the socket is open.
fn socket_proto(fd: i32, inode: &str) -> &'static str {
    static PROTOS: std::sync::Mutex<Option<rustc_hash::FxHashMap<String, &'static str>>> =
        std::sync::Mutex::new(None);
    let mut protos = PROTOS.lock().unwrap_or_else(|e| e.into_inner());
    let protos = protos.get_or_insert_with(Default::default);
    if let Some(p) = protos.get(inode) {
        return p;
    }
    let Some(s) = socket(fd, inode) else {
        return "socket";
    };
    if protos.len() > TARGETS_MAX {
        protos.clear();
    }
    protos.insert(inode.to_string(), s.proto);
    s.proto
}

fn inode_of<'a>(target: &'a str, prefix: &str) -> Option<&'a str> {
    target.strip_prefix(prefix)?.strip_suffix(']')
}

/// One socket of this process, read from the descriptor itself.
#[derive(Clone, Debug)]
pub(crate) struct Socket {
    pub(crate) proto: &'static str,
    pub(crate) local: Option<String>,
    pub(crate) remote: Option<String>,
    pub(crate) state: Option<&'static str>,
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.proto,
            self.local.as_deref().unwrap_or("(unnamed)")
        )?;
        if let Some(r) = &self.remote {
            write!(f, " -> {r}")?;
        }
        if let Some(s) = self.state {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

/// Reads protocol, addresses and TCP state of `fd` with `getsockopt`/`getsockname`, after
/// checking with `fstat` that the descriptor still is the socket `inode` (it may have been closed
/// and reused since it was listed). Cheaper and more exact than parsing `/proc/self/net/*`.
#[cfg(target_os = "linux")]
fn socket(fd: i32, inode: &str) -> Option<Socket> {
    use std::mem::{size_of, zeroed};
    // SAFETY: every call gets a valid descriptor number (at worst a closed one, which fails with
    // EBADF) and buffers of the sizes passed.
    unsafe {
        let mut st: libc::stat = zeroed();
        if libc::fstat(fd, &mut st) != 0 || st.st_ino.to_string() != inode {
            return None;
        }
        let opt = |name: libc::c_int| -> Option<libc::c_int> {
            let mut v: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            (libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            ) == 0)
                .then_some(v)
        };
        let domain = opt(libc::SO_DOMAIN)?;
        let ty = opt(libc::SO_TYPE)?;
        let proto = match (domain, ty) {
            (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) => "tcp",
            (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => "udp",
            (libc::AF_UNIX, _) => "unix",
            (libc::AF_NETLINK, _) => "netlink",
            _ => "socket",
        };
        let addr = |peer: bool| -> Option<String> {
            let mut ss: libc::sockaddr_storage = zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
            let rc = if peer {
                libc::getpeername(fd, p, &mut len)
            } else {
                libc::getsockname(fd, p, &mut len)
            };
            if rc != 0 {
                return None;
            }
            match ss.ss_family as libc::c_int {
                libc::AF_INET => {
                    let a = &*(p as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)).to_string())
                }
                libc::AF_INET6 => {
                    let a = &*(p as *const libc::sockaddr_in6);
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    let ip = ip
                        .to_ipv4_mapped()
                        .map(std::net::IpAddr::V4)
                        .unwrap_or(ip.into());
                    Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)).to_string())
                }
                libc::AF_UNIX => {
                    let a = &*(p as *const libc::sockaddr_un);
                    let n = (len as usize).saturating_sub(size_of::<libc::sa_family_t>());
                    let path: Vec<u8> = a.sun_path[..n.min(a.sun_path.len())]
                        .iter()
                        .map(|c| *c as u8)
                        .take_while(|c| *c != 0)
                        .collect();
                    (!path.is_empty()).then(|| String::from_utf8_lossy(&path).into_owned())
                }
                _ => None,
            }
        };
        let state = (proto == "tcp").then(|| {
            let mut info: libc::tcp_info = zeroed();
            let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            (rc == 0).then(|| tcp_state(info.tcpi_state)).flatten()
        });
        let state = state.flatten();
        let remote = if state == Some("LISTEN") {
            None
        } else {
            addr(true)
        };
        Some(Socket {
            proto,
            local: addr(false),
            remote,
            state,
        })
    }
}

#[cfg(not(target_os = "linux"))]
fn socket(_fd: i32, _inode: &str) -> Option<Socket> {
    None
}

fn tcp_state(n: u8) -> Option<&'static str> {
    Some(match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(port: u16) -> Fd {
        fds()
            .into_iter()
            .find(|f| f.describe().contains(&format!("127.0.0.1:{port}")))
            .expect("socket fd")
    }

    /// A report being written and a configuration file being read are leakcheck's: scans leave
    /// them out while they are open (other checks run meanwhile).
    #[test]
    fn leakcheck_s_own_files_are_left_out_of_scans() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("leakcheck-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listed = |fd: i32| fds().iter().any(|f| f.fd == fd);

        let report = std::fs::File::create(dir.join("report.json")).unwrap();
        let fd = report.as_raw_fd();
        assert!(listed(fd));
        let own = OwnFd::new(&report, &report.metadata().unwrap());
        assert!(!listed(fd), "a marked descriptor is listed");
        drop(own);
        assert!(listed(fd), "a descriptor no longer marked is left out");
        drop(report);

        let config = dir.join("leakcheck.toml");
        std::fs::write(&config, "").unwrap();
        let open = std::fs::File::open(&config).unwrap();
        assert!(listed(open.as_raw_fd()));
        note_own_file(&config);
        assert!(!listed(open.as_raw_fd()), "a configuration file is listed");
        drop(open);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn describes_listening_and_connected_tcp_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let fd = find(port);
        assert_eq!(fd.kind(), "tcp");
        assert_eq!(fd.describe(), format!("tcp 127.0.0.1:{port} (LISTEN)"));
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let local = c.local_addr().unwrap().port();
        let fd = find(local);
        assert_eq!(
            fd.describe(),
            format!("tcp 127.0.0.1:{local} -> 127.0.0.1:{port} (ESTABLISHED)")
        );
    }

    #[test]
    fn describes_udp_and_unix_sockets() {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        assert_eq!(find(port).describe(), format!("udp 127.0.0.1:{port}"));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let fd = fds().into_iter().find(|f| f.fd == a.as_raw_fd()).unwrap();
        assert_eq!(fd.kind(), "unix");
        assert_eq!(fd.describe(), "unix (unnamed)");
    }

    /// A number closed and reused between two scans is read again, not taken from the cache:
    /// for a new pipe or socket (new inode) and for anonymous inodes (which share one).
    #[test]
    fn a_reused_number_is_read_again() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let target_of = |fd: i32| fds().into_iter().find(|f| f.fd == fd).map(|f| f.target);
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let n = a.as_raw_fd();
        let first = target_of(n).unwrap();
        assert!(first.starts_with("socket:["), "{first}");
        drop(a);
        // SAFETY: eventfd and epoll_create1 return new descriptors owned by the OwnedFd.
        let e = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
        // Alone in its process (nextest), this test gets the lowest free number back every
        // time; among parallel tests another may take it first.
        let alone = std::env::var_os("NEXTEST").is_some();
        assert!(!alone || e.as_raw_fd() == n);
        if e.as_raw_fd() == n {
            assert_eq!(target_of(n).unwrap(), "anon_inode:[eventfd]");
            drop(e);
            let p = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
            assert_eq!(p.as_raw_fd(), n);
            assert_eq!(target_of(n).unwrap(), "anon_inode:[eventpoll]");
            drop(p);
        } else {
            drop(e);
        }
        let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!alone || c.as_raw_fd() == n);
        if c.as_raw_fd() == n {
            let again = target_of(n).unwrap();
            assert!(again.starts_with("socket:[") && again != first, "{again}");
        }
        drop(b);
    }
}
