//! tokio-console for leak tests (feature `console`). `LEAKCHECK_CONSOLE=1` (or an address such
//! as `127.0.0.1:6670`) installs console-subscriber once per process, before the first check's
//! baseline, so its server thread and sockets are never blamed on a test; every test runtime is
//! then visible in `tokio-console`, and a check with an unknown survivor holds the process
//! ([`DEFAULT_CONSOLE_HOLD`] unless `LEAKCHECK_HOLD_SECS` says otherwise) before shutting its
//! runtime down, so a person can attach and look.
//!
//! Without the feature the variable is an error that says how to build with it, rather than a
//! request nobody answers.

use std::net::SocketAddr;
#[cfg(feature = "console")]
use std::sync::OnceLock;
#[cfg(feature = "console")]
use std::time::{Duration, Instant};

use crate::{CheckBuilder, Error};

/// How long a failing check holds the process when the console is on and
/// `LEAKCHECK_HOLD_SECS` is not set.
#[cfg(feature = "console")]
pub const DEFAULT_CONSOLE_HOLD: Duration = Duration::from_secs(60);

/// The console's default address (tokio-console's own default).
const DEFAULT_ADDR: &str = "127.0.0.1:6669";

/// Installs the console if `LEAKCHECK_CONSOLE` asks for it, and adapts `b`.
pub(crate) fn from_env(b: CheckBuilder) -> Result<CheckBuilder, Error> {
    match std::env::var("LEAKCHECK_CONSOLE")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(value) => serve(b, &value),
        None => Ok(b),
    }
}

/// Starts the server (once per process) and adapts `b`: the hold, and a rule for the connections
/// of a person's `tokio-console` to the server.
#[cfg(feature = "console")]
fn serve(b: CheckBuilder, value: &str) -> Result<CheckBuilder, Error> {
    use crate::Rule;
    let addr = parse(value)?;
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

#[cfg(not(feature = "console"))]
fn serve(_: CheckBuilder, value: &str) -> Result<CheckBuilder, Error> {
    parse(value)?;
    Err(Error::Env {
        var: "LEAKCHECK_CONSOLE",
        value: value.to_string(),
        reason: "this build of leakcheck has no tokio-console support: enable its `console` \
                 feature (`cargo test --features leakcheck/console`)"
            .into(),
    })
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
#[cfg(feature = "console")]
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

    #[cfg(not(feature = "console"))]
    #[test]
    fn without_the_feature_the_variable_says_how_to_build_with_it() {
        let e = serve(crate::Check::builder(), "1").unwrap_err().to_string();
        assert!(
            e.contains("LEAKCHECK_CONSOLE") && e.contains("--features leakcheck/console"),
            "{e}"
        );
        // A bad address is still named as such.
        let e = serve(crate::Check::builder(), "localhost")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 1"), "{e}");
    }
}
