//! Real brokers for the Kafka and NATS tests and the pressure run: a process started on a free
//! loopback port, ready when it accepts connections, killed (and reaped) on drop, and killed by
//! the kernel if the thread that started it ends first (a crashed process leaves no broker
//! behind). Its output goes to a log file under `target/brokers/`, kept when the thread panics
//! and removed otherwise.
//!
//! One crate, so that the tests (`leakcheck_tests::brokers`) and the pressure program start
//! their brokers the same way. The tests call the panicking constructors ([`Broker::kafka`],
//! [`Broker::nats`]); a program calls [`Broker::launch`], whose [`BrokerError`] says what to run
//! or set.
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

/// Why a broker could not be had; each message says what to run or set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The program is not installed.
    #[error(
        "find {name} at {path}: run `scripts/brokers` (it installs the pinned brokers from PyPI \
         into .brokers), set {env} to the program, or set {address_env} to a running broker"
    )]
    NotInstalled {
        /// The program's name.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The variable that names the program.
        env: &'static str,
        /// The variable that names a running broker instead.
        address_env: &'static str,
    },
    /// The program could not be started, or exited, or did not accept connections in time.
    #[error("start {program}: {reason}; its log: {log}")]
    Start {
        /// The program.
        program: PathBuf,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A file or directory of the broker could not be prepared.
    #[error("prepare {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Tansu's S3 server did not create its bucket.
    #[error("create the S3 bucket: {0}")]
    Bucket(String),
}

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
    ///
    /// # Panics
    /// With [`BrokerError`]'s message when the broker cannot be had.
    pub async fn kafka() -> Broker {
        expect(Broker::start(Flavor::Kafka, false).await)
    }

    /// A Kafka-compatible broker that keeps its data across restarts:
    /// `KAFKA_BOOTSTRAP_SERVERS` if set, otherwise a new Tansu storing into a new S3 server.
    ///
    /// # Panics
    /// With [`BrokerError`]'s message when the broker cannot be had.
    pub async fn kafka_durable() -> Broker {
        expect(Broker::start(Flavor::Kafka, true).await)
    }

    /// A NATS server with JetStream (file storage): `NATS_URL` if set, otherwise a new
    /// nats-server.
    ///
    /// # Panics
    /// With [`BrokerError`]'s message when the broker cannot be had.
    pub async fn nats() -> Broker {
        expect(Broker::start(Flavor::Nats, false).await)
    }

    /// A broker of `flavor` (Tansu with its data in memory, or nats-server), or the running one
    /// its variable names (`KAFKA_BOOTSTRAP_SERVERS`, `NATS_URL`).
    pub async fn launch(flavor: Flavor) -> Result<Broker, BrokerError> {
        Broker::start(flavor, false).await
    }

    async fn start(flavor: Flavor, durable: bool) -> Result<Broker, BrokerError> {
        if let Some(address) = std::env::var(flavor.env_address())
            .ok()
            .filter(|a| !a.trim().is_empty())
        {
            return Ok(Broker {
                flavor,
                address,
                process: None,
            });
        }
        let bin = binary(flavor.program(), flavor.env_address())?;
        let port = free_port()?;
        let dir = workspace().join("target").join("brokers");
        let name = unique_name(flavor);
        std::fs::create_dir_all(&dir).map_err(|source| BrokerError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = match durable {
            true => Some(S3Server::start(dir.join(format!("{name}.s3.log"))).await?),
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
        if let Err(e) = process.spawn(flavor).await {
            if let Some(store) = &mut process.store {
                stop(&mut store.child);
            }
            return Err(e);
        }
        let address = match flavor {
            Flavor::Kafka => format!("127.0.0.1:{port}"),
            Flavor::Nats => format!("nats://127.0.0.1:{port}"),
        };
        Ok(Broker {
            flavor,
            address,
            process: Some(process),
        })
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
    ///
    /// # Panics
    /// If the broker is external, or does not come back.
    pub async fn restart(&mut self) {
        let flavor = self.flavor;
        expect(self.owned().spawn(flavor).await);
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
    async fn spawn(&mut self, flavor: Flavor) -> Result<(), BrokerError> {
        let listen = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = command(&self.bin, &self.log)?;
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
        self.child = Some(spawn_ready(cmd, &self.bin, self.port, &self.log).await?);
        Ok(())
    }

    fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl S3Server {
    /// The bucket Tansu stores into.
    const BUCKET: &'static str = "tansu";

    /// Starts moto's S3 server on a free port and creates [`S3Server::BUCKET`].
    async fn start(log: PathBuf) -> Result<S3Server, BrokerError> {
        let bin = binary(S3_SERVER, Flavor::Kafka.env_address())?;
        let port = free_port()?;
        let mut cmd = command(&bin, &log)?;
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child = spawn_ready(cmd, &bin, port, &log).await?;
        let mut server = S3Server {
            port,
            child: Some(child),
            log,
        };
        if let Err(e) = server.create_bucket().await {
            stop(&mut server.child);
            return Err(e);
        }
        Ok(server)
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
    async fn create_bucket(&self) -> Result<(), BrokerError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let failed = |what: &str, e: std::io::Error| {
            BrokerError::Bucket(format!("{what} the S3 server: {e}"))
        };
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| failed("connect to", e))?;
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            S3Server::BUCKET,
            self.port
        );
        conn.write_all(request.as_bytes())
            .await
            .map_err(|e| failed("send to", e))?;
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .await
            .map_err(|e| failed("read the answer of", e))?;
        let status = response.lines().next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("200") {
            return Err(BrokerError::Bucket(format!(
                "the S3 server answered {status:?}; its log: {}",
                self.log.display()
            )));
        }
        Ok(())
    }
}

/// A command whose output goes to `log` and that the kernel kills when the thread that
/// started it ends.
fn command(bin: &Path, log: &Path) -> Result<Command, BrokerError> {
    let io = |source| BrokerError::Io {
        path: log.to_path_buf(),
        source,
    };
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let err = out.try_clone().map_err(io)?;
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
    Ok(cmd)
}

/// Spawns `cmd` and waits until it accepts connections on `port`, with a backoff from 1 ms up
/// to 50 ms, for at most [`READY_TIMEOUT`].
async fn spawn_ready(
    mut cmd: Command,
    bin: &Path,
    port: u16,
    log: &Path,
) -> Result<Child, BrokerError> {
    let failed = |reason: String| BrokerError::Start {
        program: bin.to_path_buf(),
        reason,
        log: log.to_path_buf(),
    };
    let mut child = Some(cmd.spawn().map_err(|e| failed(e.to_string()))?);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let mut wait = Duration::from_millis(1);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(child
                .take()
                .expect("the child is there until it is returned"));
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            return Err(failed(format!(
                "it exited ({status}) before accepting connections"
            )));
        }
        if start.elapsed() > READY_TIMEOUT {
            stop(&mut child);
            return Err(failed(format!(
                "it did not accept connections on {addr} within {READY_TIMEOUT:?}"
            )));
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

/// The program its variable names, or else the one `scripts/brokers` installed; or an error
/// that says how to get it.
fn binary(p: Program, address_env: &'static str) -> Result<PathBuf, BrokerError> {
    let path = std::env::var_os(p.env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(p.installed));
    if !is_executable(&path) {
        return Err(BrokerError::NotInstalled {
            name: p.name,
            path,
            env: p.env,
            address_env,
        });
    }
    Ok(path)
}

/// The broker, or a panic with the error's message (for tests).
#[track_caller]
fn expect<T>(r: Result<T, BrokerError>) -> T {
    r.unwrap_or_else(|e| panic!("failed to {e}"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the brokers crate is inside the workspace")
        .to_path_buf()
}

/// A port nobody listens on now (the kernel picks it; it stays free unless someone else takes
/// it in the moment before the broker binds it).
fn free_port() -> Result<u16, BrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| BrokerError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
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
