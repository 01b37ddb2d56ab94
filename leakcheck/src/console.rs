//! tokio-console for leak tests (feature `console`). `LEAKCHECK_CONSOLE=1` (or an address such
//! as `127.0.0.1:6670`) installs console-subscriber once per process, before the first check's
//! baseline, so its server thread and sockets are never blamed on a test; every test runtime is
//! then visible in `tokio-console`, and a check with an unknown survivor holds the process
//! ([`DEFAULT_CONSOLE_HOLD`] unless `LEAKCHECK_HOLD_SECS` says otherwise) before shutting its
//! runtime down, so a person can attach and look.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{CheckBuilder, Error, Rule};

/// How long a failing check holds the process when the console is on and
/// `LEAKCHECK_HOLD_SECS` is not set.
pub const DEFAULT_CONSOLE_HOLD: Duration = Duration::from_secs(60);

/// The console's default address (tokio-console's own default).
const DEFAULT_ADDR: &str = "127.0.0.1:6669";

/// Installs the console if `LEAKCHECK_CONSOLE` asks for it, and adapts `b`: the hold, and a rule
/// for the connections of a person's `tokio-console` to the server.
pub(crate) fn from_env(b: CheckBuilder) -> Result<CheckBuilder, Error> {
    let Some(value) = std::env::var("LEAKCHECK_CONSOLE")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(b);
    };
    let addr = parse(&value)?;
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        console_subscriber::ConsoleLayer::builder()
            .server_addr(addr)
            .init();
        wait_until_listening(addr);
        eprintln!("leakcheck: tokio-console server on {addr}: run `tokio-console http://{addr}`");
    });
    let mut b = b.allow(
        Rule::builder(
            "tokio-console-client",
            "a tokio-console client connected to the console server leakcheck started",
        )
        .fd_target(format!("^tcp {} ->", regex::escape(&addr.to_string())))
        .build()?,
    );
    if b.hold.is_zero() && std::env::var_os("LEAKCHECK_HOLD_SECS").is_none() {
        b = b.hold_on_leak(DEFAULT_CONSOLE_HOLD);
    }
    Ok(b)
}

fn parse(value: &str) -> Result<SocketAddr, Error> {
    let v = value.trim();
    let v = match v {
        "1" | "true" | "on" | "yes" => DEFAULT_ADDR,
        other => other,
    };
    v.parse().map_err(|_| Error::Env {
        var: "LEAKCHECK_CONSOLE",
        value: value.to_string(),
        reason: "expected 1 (for 127.0.0.1:6669) or an address such as 127.0.0.1:6670".into(),
    })
}

/// The server starts on its own thread: wait (bounded) until it listens, so that its sockets
/// exist before any baseline.
fn wait_until_listening(addr: SocketAddr) {
    let want = format!("tcp {addr} (LISTEN)");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !crate::process::fds().iter().any(|f| f.describe() == want) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_on_and_addresses_and_names_the_variable() {
        assert_eq!(parse("1").unwrap(), DEFAULT_ADDR.parse().unwrap());
        assert_eq!(
            parse("127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
        let e = parse("localhost").unwrap_err().to_string();
        assert!(
            e.contains("LEAKCHECK_CONSOLE") && e.contains("localhost"),
            "{e}"
        );
    }
}
