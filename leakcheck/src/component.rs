//! Which component owns a survivor: a crate (and module) for tasks, a family for threads.

/// Whether `file` is a dependency's source: a registry crate, a git checkout, or build output
/// (`OUT_DIR`) of one.
pub(crate) fn is_library_path(file: &str) -> bool {
    is_library(&slashed(file))
}

/// [`is_library_path`] of a path with `/` separators.
fn is_library(file: &str) -> bool {
    file.contains("/registry/src/")
        || file.contains("/git/checkouts/")
        || of_build_output(file).is_some()
}

/// `file` with `/` separators, borrowed when it has none to replace.
fn slashed(file: &str) -> std::borrow::Cow<'_, str> {
    if file.contains('\\') {
        file.replace('\\', "/").into()
    } else {
        file.into()
    }
}

/// The owner of a spawn location: `async-nats` for a registry crate, `eventbus::pool` for
/// `eventbus/src/pool/keyed.rs`, `std` for the standard library.
pub(crate) fn of_path(file: &str) -> String {
    let file = slashed(file);
    if let Some(c) = of_workspace_path(&file) {
        return c;
    }
    if let Some(krate) = of_build_output(&file) {
        return krate.to_string();
    }
    for marker in ["/registry/src/", "/git/checkouts/"] {
        if let Some(i) = file.find(marker) {
            let rest = &file[i + marker.len()..];
            // `<index>/<crate>-<version>/...` (or `<repo>/<rev>/...` for git).
            let krate = rest.split('/').nth(1).unwrap_or(rest);
            return strip_version(krate).to_string();
        }
    }
    if file.starts_with("/rustc/") || file.contains("/library/std/") {
        return "std".into();
    }
    let parts: Vec<&str> = file.split('/').collect();
    match parts
        .iter()
        .rposition(|p| *p == "src" || *p == "tests" || *p == "examples" || *p == "benches")
    {
        Some(i) if i > 0 => {
            let krate = parts[i - 1];
            let rest = &parts[i + 1..];
            match rest {
                [only] if matches!(*only, "lib.rs" | "main.rs") => krate.to_string(),
                [first, ..] => format!("{krate}::{}", first.trim_end_matches(".rs")),
                [] => krate.to_string(),
            }
        }
        // A file directly in `src/` of a member at the root, or an unusual layout.
        _ => parts
            .first()
            .copied()
            .unwrap_or("unknown")
            .trim_end_matches(".rs")
            .to_string(),
    }
}

/// The crate whose build script generated or copied `file` (C sources a `-sys` crate compiles,
/// such as librdkafka's): `target/<profile>/build/<crate>-<hash>/out/...` → `<crate>`.
fn of_build_output(file: &str) -> Option<&str> {
    let mut rest = file;
    while let Some(i) = rest.find("/build/") {
        rest = &rest[i + "/build/".len()..];
        let (dir, after) = rest.split_once('/')?;
        let (krate, hash) = dir.rsplit_once('-')?;
        if after.starts_with("out/")
            && hash.len() == 16
            && hash.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Some(krate);
        }
    }
    None
}

/// The component of a file of the workspace under test (or of a path dependency): its package's
/// name, then the module (`leakcheck-tests::scenarios` for `tests/src/scenarios.rs`), so that a
/// single-package project's tasks are filed under its name rather than `src`. `None` when the file
/// is not found on this machine or belongs to no package.
fn of_workspace_path(file: &str) -> Option<String> {
    if file.starts_with("/rustc/") || is_library(file) {
        return None;
    }
    let path = std::path::Path::new(file);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        crate::tasks::workspace_root()?.join(path)
    };
    let dir = full.parent()?;
    let (pkg_dir, name) = package_of(dir)?;
    let rest: Vec<String> = full
        .strip_prefix(&pkg_dir)
        .ok()?
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let module = match rest.as_slice() {
        // `src/lib.rs`, `src/main.rs`, a `build.rs`.
        [_, only] if matches!(only.as_str(), "lib.rs" | "main.rs") => None,
        [_, first, ..] => Some(first.trim_end_matches(".rs").to_string()),
        _ => None,
    };
    Some(match module {
        Some(m) => format!("{name}::{m}"),
        None => name,
    })
}

/// The nearest package at or above `dir`: its directory and name, each directory read once per
/// process.
fn package_of(dir: &std::path::Path) -> Option<(std::path::PathBuf, String)> {
    use std::collections::HashMap;
    use std::path::PathBuf;
    static SEEN: std::sync::Mutex<Option<HashMap<PathBuf, Option<String>>>> =
        std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    for d in dir.ancestors() {
        let name = seen
            .entry(d.to_path_buf())
            .or_insert_with(|| {
                let text = std::fs::read_to_string(d.join("Cargo.toml")).ok()?;
                let doc: toml::Table = text.parse().ok()?;
                doc.get("package")?
                    .get("name")?
                    .as_str()
                    .map(str::to_string)
            })
            .clone();
        if let Some(name) = name {
            return Some((d.to_path_buf(), name));
        }
    }
    None
}

/// The owner named by a function path: `eventbus::pool::Pool::run` → `eventbus::pool`.
pub(crate) fn of_function(function: &str) -> String {
    let f = function.trim_start_matches('<');
    let mut segs = f.split("::").take(2);
    match (segs.next(), segs.next()) {
        (Some(a), Some(b)) if b.chars().next().is_some_and(|c| c.is_lowercase()) => {
            format!("{a}::{b}")
        }
        (Some(a), _) => a.to_string(),
        _ => f.to_string(),
    }
}

fn strip_version(dir: &str) -> &str {
    // `async-nats-0.51.0` → `async-nats`: cut at the last `-` followed by a digit.
    match dir
        .rmatch_indices('-')
        .find(|(i, _)| dir[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
    {
        Some((i, _)) => &dir[..i],
        None => dir,
    }
}

/// Well-known threads of libraries, by name prefix, and the crate that starts them. Linux cuts
/// thread names to 15 bytes, so each prefix is at most that long.
const THREAD_CATALOG: &[(&str, &str)] = &[
    // librdkafka: `rdk:main`, `rdk:broker1`, `rdk:bg`.
    ("rdk:", "rdkafka"),
    // rust-rdkafka's ThreadedProducer: "producer polling thread".
    ("producer pollin", "rdkafka"),
    // tokio's default names: `tokio-rt-worker` (1.4x), `tokio-runtime-worker` before.
    ("tokio-rt-worker", "tokio"),
    ("tokio-runtime-w", "tokio"),
    // tracing-appender's non-blocking writer: "tracing-appender".
    ("tracing-appende", "tracing-appender"),
    // sqlx's SQLite worker: "sqlx-sqlite-worker-N".
    ("sqlx-sqlite-wor", "sqlx"),
    // r2d2's pool reaper: "r2d2-worker-N".
    ("r2d2-worker", "r2d2"),
    // reqwest's blocking client: "reqwest-internal-sync-runtime".
    ("reqwest-interna", "reqwest"),
    // The `blocking` crate's pool: "blocking-N".
    ("blocking-", "blocking"),
    // notify's watcher threads: "notify-rs inotify loop".
    ("notify-rs", "notify"),
    // console-subscriber's aggregator: "console_subscriber".
    ("console_subscri", "console-subscriber"),
    // OpenTelemetry's batch processors: "OpenTelemetry.Traces.BatchProcessor".
    ("OpenTelemetry", "opentelemetry"),
    // jemalloc's background threads.
    ("jemalloc_bg_thd", "jemalloc"),
];

/// Whether `name` is a thread family of the catalog.
pub(crate) fn is_catalogued(name: &str) -> bool {
    THREAD_CATALOG.iter().any(|(p, _)| name.starts_with(p))
}

/// A thread's family: the crate that starts it for the well-known ones (`rdkafka` for
/// `rdk:*`), the name without a trailing number otherwise.
pub(crate) fn of_thread(name: &str) -> String {
    if let Some((_, krate)) = THREAD_CATALOG.iter().find(|(p, _)| name.starts_with(p)) {
        return (*krate).into();
    }
    let trimmed =
        name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_' || c == '#');
    if trimmed.is_empty() { name } else { trimmed }.to_string()
}

/// A child's program: the base name of its first argument.
pub(crate) fn of_cmdline(cmdline: &str) -> String {
    let prog = cmdline.split_whitespace().next().unwrap_or(cmdline);
    prog.rsplit('/').next().unwrap_or(prog).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_from_paths() {
        assert_eq!(
            of_path("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/async-nats-0.51.0/src/client.rs"),
            "async-nats"
        );
        assert_eq!(of_path("eventbus/src/pool/keyed.rs"), "eventbus::pool");
        assert_eq!(of_path("eventbus/src/lib.rs"), "eventbus");
        // Files of this workspace: the package's name, then the module.
        assert_eq!(
            of_path("tests/src/scenarios.rs"),
            "leakcheck-tests::scenarios"
        );
        assert_eq!(of_path("leakcheck/examples/demo.rs"), "leakcheck::demo");
        assert_eq!(of_path("/work/app/src/main.rs"), "app");
        assert_eq!(of_path("/rustc/abc/library/std/src/thread/mod.rs"), "std");
        // C compiled by a build script, from its output directory.
        assert_eq!(
            of_path("/w/target/debug/build/rdkafka-sys-0123456789abcdef/out/librdkafka/src/rdkafka_transport.c"),
            "rdkafka-sys"
        );
    }

    #[test]
    fn components_from_names() {
        assert_eq!(
            of_function("eventbus::pool::Pool::run::{{closure}}"),
            "eventbus::pool"
        );
        assert_eq!(of_function("<eventbus::Bus as Drop>::drop"), "eventbus");
        assert_eq!(of_thread("rdk:broker1001"), "rdkafka");
        assert_eq!(of_thread("tokio-rt-worker"), "tokio");
        assert_eq!(of_thread("tokio-runtime-w"), "tokio");
        assert_eq!(of_thread("tracing-appende"), "tracing-appender");
        assert_eq!(of_thread("sqlx-sqlite-wor"), "sqlx");
        assert_eq!(of_thread("producer pollin"), "rdkafka");
        assert_eq!(of_thread("metrics-ticker-3"), "metrics-ticker");
        assert_eq!(of_thread("42"), "42");
        assert_eq!(of_cmdline("/usr/bin/sleep 30"), "sleep");
    }
}
