//! File descriptors of this process from `/proc/self/fd`; sockets are resolved to protocol and
//! addresses through `/proc/self/net/*`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// One open descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Fd {
    pub(crate) fd: i32,
    /// The `readlink` target: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:[eventfd]`...
    pub(crate) target: String,
}

impl Fd {
    /// The descriptor's type, used as its component: `tcp`, `udp`, `unix`, `socket`, `pipe`,
    /// `eventfd`, `epoll`, `timerfd`, `file`...
    pub(crate) fn kind(&self, sockets: &SocketTable) -> String {
        if let Some(inode) = inode_of(&self.target, "socket:[") {
            return sockets
                .get(inode)
                .map(|s| s.proto.clone())
                .unwrap_or_else(|| "socket".into());
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
    pub(crate) fn describe(&self, sockets: &SocketTable) -> String {
        if let Some(inode) = inode_of(&self.target, "socket:[") {
            if let Some(s) = sockets.get(inode) {
                return s.to_string();
            }
        }
        self.target.clone()
    }
}

pub(crate) fn fds() -> Vec<Fd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // The descriptor that lists the directory closes before we return: skip what vanished.
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.display().to_string();
        if target == "/proc/self/fd"
            || target.starts_with(&format!("/proc/{}/fd", std::process::id()))
        {
            continue;
        }
        out.push(Fd { fd, target });
    }
    out
}

fn inode_of<'a>(target: &'a str, prefix: &str) -> Option<&'a str> {
    target.strip_prefix(prefix)?.strip_suffix(']')
}

/// One socket from `/proc/self/net/*`.
#[derive(Clone, Debug)]
pub(crate) struct Socket {
    pub(crate) proto: String,
    pub(crate) local: String,
    pub(crate) remote: Option<String>,
    pub(crate) state: Option<&'static str>,
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.proto, self.local)?;
        if let Some(r) = &self.remote {
            write!(f, " -> {r}")?;
        }
        if let Some(s) = self.state {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

/// Sockets by inode, read once per report.
#[derive(Default)]
pub(crate) struct SocketTable(HashMap<String, Socket>);

impl SocketTable {
    pub(crate) fn read() -> Self {
        let mut map = HashMap::new();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            let Ok(text) = std::fs::read_to_string(format!("/proc/self/net/{proto}")) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 10 {
                    continue;
                }
                let tcp = proto.starts_with("tcp");
                let remote = parse_addr(f[2]).filter(|a| a.port() != 0);
                let state = if tcp { tcp_state(f[3]) } else { None };
                let listening = state == Some("LISTEN");
                map.insert(
                    f[9].to_string(),
                    Socket {
                        proto: proto.trim_end_matches('6').to_string(),
                        local: parse_addr(f[1]).map(|a| a.to_string()).unwrap_or_default(),
                        remote: if listening {
                            None
                        } else {
                            remote.map(|a| a.to_string())
                        },
                        state,
                    },
                );
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/self/net/unix") {
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 7 {
                    continue;
                }
                map.insert(
                    f[6].to_string(),
                    Socket {
                        proto: "unix".into(),
                        local: f
                            .get(7)
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "(unnamed)".into()),
                        remote: None,
                        state: None,
                    },
                );
            }
        }
        Self(map)
    }

    pub(crate) fn get(&self, inode: &str) -> Option<&Socket> {
        self.0.get(inode)
    }
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => std::net::IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(std::net::IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn tcp_state(hex: &str) -> Option<&'static str> {
    Some(match u8::from_str_radix(hex, 16).ok()? {
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

    #[test]
    fn parses_proc_net_addresses() {
        // 127.0.0.1:8080 as the kernel prints it on little-endian machines.
        assert_eq!(
            parse_addr("0100007F:1F90").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050")
                .unwrap()
                .to_string(),
            "[::1]:80"
        );
        assert_eq!(tcp_state("0A"), Some("LISTEN"));
    }

    #[test]
    fn sees_a_listening_socket_with_its_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let table = SocketTable::read();
        let fd = fds()
            .into_iter()
            .find(|f| f.describe(&table).contains(&format!("127.0.0.1:{port}")))
            .expect("listener fd");
        assert_eq!(fd.kind(&table), "tcp");
        assert!(fd.describe(&table).contains("LISTEN"));
    }
}
