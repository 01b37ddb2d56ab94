//! `leakcheck.toml`: settings, `[[allow]]` rules for every check of a workspace, and named
//! `[[rule]]`s that a test opts into (`#[leak_test(allow = ["name"])]`).
//!
//! ```toml
//! [settings]
//! settle_ms = 1000          # LEAKCHECK_SETTLE_MS
//! backtrace = true          # LEAKCHECK_BACKTRACE
//! mode = "fail"             # LEAKCHECK_MODE
//!
//! [[allow]]
//! name = "metrics-ticker"
//! reason = "the metrics crate starts one global ticker on first use"
//! kind = "task"
//! spawn_location = 'metrics-[0-9.]+/src/ticker\.rs'
//!
//! [[rule]]
//! name = "kafka-client-threads"
//! reason = "librdkafka's threads exit after the client is dropped, off the runtime"
//! thread_name = '^rdk:'
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

use super::{Rule, RuleSet};
use crate::report::Kind;
use crate::Error;

/// The name of the workspace configuration file.
pub const FILE_NAME: &str = "leakcheck.toml";

/// Settings and rules read from a `leakcheck.toml`.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FileConfig {
    /// The file read.
    pub path: PathBuf,
    /// `[settings]`: each one is overridden by its environment variable.
    pub settings: FileSettings,
    /// `[[allow]]` rules, in file order: they apply to every check.
    pub rules: RuleSet,
    /// `[[rule]]` rules: they apply only to checks that name them.
    pub named: RuleSet,
}

/// The `[settings]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileSettings {
    /// Settle deadline in milliseconds.
    pub settle_ms: Option<u64>,
    /// Task dump timeout in milliseconds.
    pub dump_timeout_ms: Option<u64>,
    /// Runtime shutdown timeout in milliseconds.
    pub shutdown_timeout_ms: Option<u64>,
    /// Spawn backtraces on or off.
    pub backtrace: Option<bool>,
    /// Which kinds to check: any of `tasks`, `threads`, `fds`, `children`.
    pub kinds: Option<Vec<String>>,
    /// `fail` or `warn`.
    pub mode: Option<String>,
    /// Where `#[leak_test]` writes one JSON report per test (relative to this file's directory),
    /// or `"off"`.
    pub report_dir: Option<String>,
    /// How long a failing check holds the process before shutting the runtime down, in seconds.
    pub hold_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    settings: FileSettings,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    reason: String,
    kind: Option<Kind>,
    spawn_location: Option<String>,
    top_frame: Option<String>,
    any_frame: Option<String>,
    await_point: Option<String>,
    task_name: Option<String>,
    thread_name: Option<String>,
    fd_target: Option<String>,
    child_cmdline: Option<String>,
    component: Option<String>,
}

impl FileConfig {
    /// Reads and validates a configuration file, once per process for an unchanged file (every
    /// leak test reads it).
    pub(crate) fn read_cached(path: &Path) -> Result<Self, Error> {
        type Cache = HashMap<PathBuf, (Option<SystemTime>, FileConfig)>;
        static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some((m, cfg)) = cache.get(path) {
            if modified.is_some() && *m == modified {
                return Ok(cfg.clone());
            }
        }
        let cfg = Self::read(path)?;
        cache.insert(path.to_path_buf(), (modified, cfg.clone()));
        Ok(cfg)
    }

    /// Reads and validates a configuration file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in messages and rule origins.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let raw: Raw = toml::from_str(text).map_err(|e| Error::ParseFile {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let rules = build_rules(raw.allow, path)?;
        let named = build_rules(raw.rule, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            settings: raw.settings,
            rules,
            named,
        })
    }

    /// Finds `leakcheck.toml` in `start` or the nearest ancestor that has one.
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join(FILE_NAME))
            .find(|p| p.is_file())
    }
}

fn build_rules(raw: Vec<RawRule>, path: &Path) -> Result<RuleSet, Error> {
    let mut rules = RuleSet::new();
    for r in raw {
        let mut b = Rule::builder(r.name, r.reason).origin(path.display().to_string());
        if let Some(k) = r.kind {
            b = b.kind(k);
        }
        let fields = [
            ("spawn_location", r.spawn_location),
            ("top_frame", r.top_frame),
            ("any_frame", r.any_frame),
            ("await_point", r.await_point),
            ("task_name", r.task_name),
            ("thread_name", r.thread_name),
            ("fd_target", r.fd_target),
            ("child_cmdline", r.child_cmdline),
            ("component", r.component),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                b = b.pattern(key, v);
            }
        }
        rules.push(b.build()?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, Error> {
        FileConfig::parse(text, Path::new("leakcheck.toml"))
    }

    #[test]
    fn reads_settings_and_rules_in_order() {
        let c = parse(
            r#"
            [settings]
            settle_ms = 250
            backtrace = false
            kinds = ["tasks", "threads"]

            [[allow]]
            name = "a"
            reason = "first"
            kind = "thread"
            thread_name = "^rdk:"

            [[allow]]
            name = "b"
            reason = "second"
            spawn_location = 'metrics-.*\.rs'
            "#,
        )
        .unwrap();
        assert_eq!(c.settings.settle_ms, Some(250));
        assert_eq!(c.settings.backtrace, Some(false));
        let names: Vec<_> = c.rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            c.rules.iter().next().unwrap().origin(),
            Some("leakcheck.toml")
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_the_valid_ones() {
        let e = parse("[[allow]]\nname = \"a\"\nreason = \"r\"\nthread = \"x\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown field `thread`"), "{msg}");
        assert!(msg.contains("thread_name"), "{msg}");
        let e = parse("[settings]\nsettle = 3\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `settle`"), "{e}");
    }

    #[test]
    fn a_bad_regex_names_the_rule_and_the_file() {
        let e = parse("[[allow]]\nname = \"sockets\"\nreason = \"r\"\nfd_target = \"tcp (\"\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`sockets` (from leakcheck.toml)"), "{msg}");
        assert!(msg.contains("fd_target"), "{msg}");
    }

    #[test]
    fn a_wrong_type_and_an_unknown_kind_are_errors() {
        assert!(parse("[settings]\nsettle_ms = \"fast\"\n").is_err());
        let e = parse(
            "[[allow]]\nname = \"a\"\nreason = \"r\"\nkind = \"socket\"\nthread_name = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("socket"), "{e}");
    }

    #[test]
    fn an_unreadable_file_names_the_path() {
        let e = FileConfig::read(Path::new("/nonexistent/leakcheck.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/leakcheck.toml"), "{e}");
    }
}
