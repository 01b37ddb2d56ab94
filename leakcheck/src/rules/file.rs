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

use super::rule::{unique_names, Site};
use super::{Rule, RuleSet};
use crate::error::{excerpt_ends, pointer};
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
    /// What a leak does to a `#[leak_test]` whose body panicked: `report` or `fail`.
    pub on_panic: Option<String>,
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
    name: toml::Spanned<String>,
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
        // Other checks may be running: the file's descriptor is leakcheck's, not their test's.
        crate::process::note_own_file(path);
        let cfg = crate::process::unrecorded(|| Self::read(path))?;
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

    /// Parses configuration text; `path` is used in messages and rule origins. Two rules of one
    /// name (`[[allow]]` and `[[rule]]` alike) are an error.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let raw: Raw = toml::from_str(text).map_err(|e| Error::ParseFile {
            path: path.to_path_buf(),
            message: toml_message(text, &e),
        })?;
        let newlines: Vec<usize> = text.match_indices('\n').map(|(i, _)| i).collect();
        let rules = build_rules(raw.allow, "allow", &newlines, path)?;
        let named = build_rules(raw.rule, "rule", &newlines, path)?;
        unique_names(rules.iter().chain(named.iter()))?;
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

/// A TOML error, bounded: the toml crate's `Display` quotes the whole line (10 MB for a 10 MB
/// line), so the message is built from its parts: the line and column, what is wrong (bounded
/// too: it can quote a key or a value), and an excerpt of the line around the column.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let what = excerpt_ends(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let p = pointer(text, span.start, span.end.saturating_sub(span.start));
            format!(
                "line {}, column {}: {what}\n{}",
                p.line, p.column, p.drawing
            )
        }
        None => what.to_string(),
    }
}

fn build_rules(
    raw: Vec<RawRule>,
    table: &'static str,
    newlines: &[usize],
    path: &Path,
) -> Result<RuleSet, Error> {
    let mut rules = RuleSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let site = Site {
            table,
            index: i + 1,
            line: newlines.partition_point(|&n| n < r.name.span().start) + 1,
        };
        let mut b = Rule::builder(r.name.into_inner(), r.reason)
            .origin(path.display().to_string())
            .site(site);
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
        assert!(
            msg.contains("`sockets` (from leakcheck.toml, `[[allow]]` #1 at line 2)"),
            "{msg}"
        );
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
    fn a_ten_megabyte_line_gives_a_short_message_that_says_where() {
        // One line: a valid table, then 10 MB that are not TOML.
        let text = format!("settings = {{ settle_ms = 1 }} {}", "a".repeat(10_000_000));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.len() < 1024, "{} bytes", msg.len());
        assert!(
            msg.starts_with("parse rules file leakcheck.toml: line 1, column 30: "),
            "{msg}"
        );
        assert!(
            msg.contains("\n1 | settings = { settle_ms = 1 } aaa"),
            "{msg}"
        );
        assert!(msg.ends_with('^'), "{msg}");

        // The problem at the end of the line: the excerpt is around it.
        let text = format!("x = \"{}", "b".repeat(10_000_000));
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.len() < 1024, "{} bytes", msg.len());
        assert!(msg.contains("line 1, column "), "{msg}");
        assert!(msg.contains("1 | …bbbb"), "{msg}");
    }

    #[test]
    fn a_long_key_value_name_or_regex_is_quoted_as_an_excerpt() {
        let long = "k".repeat(10_000_000);
        for text in [
            // An unknown key: the parser's message quotes it.
            format!("[settings]\n{long} = 1\n"),
            // A value of the wrong type: the message quotes it.
            format!("[settings]\nsettle_ms = \"{long}\"\n"),
            // An unknown kind of rule.
            format!("[[allow]]\nname = \"a\"\nreason = \"r\"\nkind = \"{long}\"\n"),
            // A rule's name, with a bad regex.
            format!("[[allow]]\nname = \"{long}\"\nreason = \"r\"\nthread_name = \"(\"\n"),
            // A long regex, bad at its end (1 MB: parsing 10 MB of regex takes a while).
            format!(
                "[[allow]]\nname = \"a\"\nreason = \"r\"\nthread_name = \"{}(\"\n",
                &long[..1_000_000]
            ),
        ] {
            let msg = parse(&text).unwrap_err().to_string();
            assert!(
                msg.len() < 1024,
                "{} bytes: {}",
                msg.len(),
                &msg[..2000.min(msg.len())]
            );
            assert!(
                msg.contains("kkkk") && msg.contains("bytes in all"),
                "{msg}"
            );
        }
        let msg = parse(&format!(
            "[[allow]]\nname = \"a\"\nreason = \"r\"\nthread_name = \"{}(\"\n",
            &long[..1_000_000]
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("unclosed group at line 1, column 1000001"),
            "{msg}"
        );
        let msg = parse(&format!("[settings]\n{long} = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2, column 1: unknown field `kkk"),
            "{msg}"
        );
    }

    #[test]
    fn two_rules_of_one_name_in_a_file_are_an_error_naming_both() {
        let rule = |table: &str, name: &str| {
            format!("[[{table}]]\nname = \"{name}\"\nreason = \"r\"\nthread_name = \"x\"\n\n")
        };
        let e = parse(&[rule("allow", "a"), rule("allow", "b"), rule("allow", "a")].concat())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("build rule `a`: two rules have this name, `[[allow]]` #1 at line 2 of leakcheck.toml and `[[allow]]` #3 at line 12 of leakcheck.toml;"),
            "{e}"
        );
        let e = parse(&[rule("allow", "a"), rule("rule", "a")].concat())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`[[allow]]` #1 at line 2 of leakcheck.toml and `[[rule]]` #1 at line 7 of leakcheck.toml"),
            "{e}"
        );
        parse(&[rule("allow", "a"), rule("rule", "b")].concat()).unwrap();
    }

    #[test]
    fn a_key_the_rule_kind_never_has_is_an_error() {
        let e = parse(
            "[[allow]]\nname = \"t\"\nreason = \"r\"\nkind = \"task\"\nthread_name = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "build rule `t` (from leakcheck.toml, `[[allow]]` #1 at line 2): `thread_name` can never match: the rule is of kind `task`, and only threads have a `thread_name`; a `task` rule can match spawn_location, top_frame, any_frame, await_point, task_name, component, or leave out `kind` to match every kind"
        );
    }

    #[test]
    fn an_unreadable_file_names_the_path() {
        let e = FileConfig::read(Path::new("/nonexistent/leakcheck.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/leakcheck.toml"), "{e}");
    }
}
