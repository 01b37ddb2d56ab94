//! Normalization for snapshots: what varies from run to run or machine to machine is masked.

use std::sync::OnceLock;

use regex::Regex;

/// `0`, `1`, or `n` for any larger count: counts of library threads and sockets vary by run.
pub(crate) fn count_bucket(n: usize) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        _ => "n",
    }
}

/// A change of a count: `0`, `+1`, `+n`, `-1` or `-n`.
pub(crate) fn delta_bucket(d: i64) -> &'static str {
    match d {
        0 => "0",
        1 => "+1",
        -1 => "-1",
        d if d > 1 => "+n",
        _ => "-n",
    }
}

/// Masks addresses, ports, ids and absolute path prefixes in one line of text.
pub(crate) fn normalize(text: &str) -> String {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            // Registry sources: keep `crate-version/src/...`.
            (r"(?:/[^\s:']*)?/registry/src/[^/\s]+/", ""),
            (r"(?:/[^\s:']*)?/git/checkouts/[^/\s]+/[^/\s]+/", ""),
            // Crate versions (`hyper-util-0.1.10/` → `hyper-util/`): a patch release of a
            // dependency must not change a snapshot.
            (
                r"\b([A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z_][A-Za-z0-9_]*)*)-\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?(?:\+[0-9A-Za-z.-]+)?/",
                "$1/",
            ),
            // The standard library's sources.
            (r"/rustc/[0-9a-f]+/", "<rust>/"),
            // Hex addresses.
            (r"0x[0-9a-fA-F]+", "0x?"),
            // Ports of socket addresses.
            (r"(\d+\.\d+\.\d+\.\d+|\]):\d+", "$1:<port>"),
            // Inodes of sockets and pipes.
            (r"(socket|pipe):\[\d+\]", "$1:[?]"),
            // Workspace-absolute paths: keep from the member directory down.
            (
                r"/(?:[^\s:/']+/)*(?P<m>(?:leakcheck|eventbus|tests|fixtures)/)",
                "$m",
            ),
            // Build hashes in executable (main thread) names.
            (r"-[0-9a-f]{7,16}\b", "-<hash>"),
            // Temporary directories.
            (r"/tmp/[^\s']*", "<tmp>"),
            // Line and column of a source location: an edit above it must not change a
            // snapshot (the file and the function stay).
            (r"(\.rs):\d+(?::\d+)?\b", "$1:_"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("valid normalization regex"), r))
        .collect()
    });
    let mut out = text.to_string();
    for (re, rep) in rules {
        out = re.replace_all(&out, *rep).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn masks_what_varies() {
        assert_eq!(
            normalize("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/task.rs:5:1"),
            "tokio/src/task.rs:_"
        );
        assert_eq!(
            normalize("tcp 127.0.0.1:40123 -> 127.0.0.1:9092 (ESTABLISHED)"),
            "tcp 127.0.0.1:<port> -> 127.0.0.1:<port> (ESTABLISHED)"
        );
        assert_eq!(
            normalize("[::1]:80 socket:[12345] at 0x7f00ab"),
            "[::1]:<port> socket:[?] at 0x?"
        );
        assert_eq!(
            normalize("/work/main/tests/src/scenarios.rs:3:9"),
            "tests/src/scenarios.rs:_"
        );
        assert_eq!(normalize("sleep 30 /tmp/.tmpAb12/x"), "sleep 30 <tmp>");
        assert_eq!(
            normalize("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.10/src/rt/tokio.rs and toml-1.2.1+spec-1.1.0/src/de.rs"),
            "hyper-util/src/rt/tokio.rs and toml/src/de.rs"
        );
        assert_eq!(
            normalize("/rustc/abc123/library/std/src/thread/mod.rs"),
            "<rust>/library/std/src/thread/mod.rs"
        );
    }
}
