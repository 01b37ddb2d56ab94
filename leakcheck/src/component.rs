//! Which component owns a survivor: a crate (and module) for tasks, a family for threads.

/// The owner of a spawn location: `async-nats` for a registry crate, `eventbus::pool` for
/// `eventbus/src/pool/keyed.rs`, `std` for the standard library.
pub(crate) fn of_path(file: &str) -> String {
    let file = file.replace('\\', "/");
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

/// A thread's family: `rdkafka` for `rdk:*`, the name without a trailing number otherwise.
pub(crate) fn of_thread(name: &str) -> String {
    if name.starts_with("rdk:") {
        return "rdkafka".into();
    }
    // tokio's default names: `tokio-rt-worker` (1.4x), `tokio-runtime-worker` before (cut to
    // 15 bytes by Linux).
    if name.starts_with("tokio-runtime-w") || name == "tokio-rt-worker" {
        return "tokio".into();
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
        assert_eq!(of_path("tests/src/scenarios.rs"), "tests::scenarios");
        assert_eq!(of_path("/work/app/src/main.rs"), "app");
        assert_eq!(of_path("/rustc/abc/library/std/src/thread/mod.rs"), "std");
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
        assert_eq!(of_thread("metrics-ticker-3"), "metrics-ticker");
        assert_eq!(of_thread("42"), "42");
        assert_eq!(of_cmdline("/usr/bin/sleep 30"), "sleep");
    }
}
