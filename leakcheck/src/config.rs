//! Configuration of a check: code defaults, `leakcheck.toml`, then `LEAKCHECK_*` variables.
//!
//! | variable | setting | default |
//! |---|---|---|
//! | `LEAKCHECK_SETTLE_MS` | [`CheckBuilder::settle_deadline`] | [`DEFAULT_SETTLE`] (1000 ms) |
//! | `LEAKCHECK_DUMP_TIMEOUT_MS` | [`CheckBuilder::dump_timeout`] | [`DEFAULT_DUMP_TIMEOUT`] (1000 ms) |
//! | `LEAKCHECK_SHUTDOWN_TIMEOUT_MS` | [`CheckBuilder::shutdown_timeout`] | [`DEFAULT_SHUTDOWN_TIMEOUT`] (1000 ms) |
//! | `LEAKCHECK_BACKTRACE` | [`CheckBuilder::backtraces`] | [`DEFAULT_BACKTRACES`] (`true`) |
//! | `LEAKCHECK_KINDS` | [`CheckBuilder::kinds`] | all: `tasks,threads,fds,children` |
//! | `LEAKCHECK_MODE` | [`CheckBuilder::mode`] | [`DEFAULT_MODE`] (`fail`) |
//! | `LEAKCHECK_REPORT_DIR` | [`CheckBuilder::report_dir`] | `<target dir>/leakcheck` ([`DEFAULT_REPORT_DIR`]); `off` writes none |
//! | `LEAKCHECK_HOLD_SECS` | [`CheckBuilder::hold_on_leak`] | 0 |
//! | `LEAKCHECK_ON_PANIC` | `#[leak_test(on_panic = ...)]` only | `report`: a `#[should_panic]` test's leaks are printed, the test passes; `fail` fails it |
//! | `LEAKCHECK_CONFIG` | the file [`CheckBuilder::with_env`] reads | `leakcheck.toml` in the nearest ancestor of `CARGO_MANIFEST_DIR` (or the current directory) |

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::excerpt;
use crate::report::Kind;
use crate::rules::{unique_names, FileConfig, Rule, RuleSet};
use crate::Error;

/// How long a check waits for survivors to exit before it calls them leaks, per phase (tasks
/// while the runtime runs; threads, descriptors and children after it shut down).
///
/// Settling is event-driven (a task's exit wakes the check at once) or polls with a backoff from
/// 50 µs to 5 ms, so a clean check never waits for this deadline: only a failing one does. One
/// second is ten times the slowest clean shutdown we measured (an rdkafka client dropping its
/// threads, 10-100 ms) and keeps a failing test fast.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(1000);

/// How long a task dump may take before the check goes on without await traces. Dumps hang when
/// a worker thread is blocked.
pub const DEFAULT_DUMP_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long the checked runtime's shutdown may wait for blocking tasks (`spawn_blocking`)
/// before the check reports their threads instead of hanging.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(1000);

/// Whether spawn backtraces are captured (about 0.1-0.3 µs per spawn with frame pointers).
pub const DEFAULT_BACKTRACES: bool = true;

/// What [`Check::finish_test`](crate::Check::finish_test) does with an unknown survivor.
pub const DEFAULT_MODE: Mode = Mode::Fail;

/// The report directory's name inside the cargo target directory.
pub const DEFAULT_REPORT_DIR: &str = "leakcheck";

/// What a leak does to a `#[leak_test]` whose body panicked (see [`OnPanic`]).
pub(crate) const DEFAULT_ON_PANIC: OnPanic = OnPanic::Report;

/// What an unknown survivor does to a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The test fails with the report (the default).
    Fail,
    /// The report is printed to stderr and the test goes on: for adopting leakcheck in a suite
    /// that still leaks.
    Warn,
}

impl Mode {
    /// Parses `fail` or `warn`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "fail" => Ok(Mode::Fail),
            "warn" => Ok(Mode::Warn),
            other => Err(format!(
                "unknown mode `{}`: expected `fail` or `warn`",
                excerpt(other)
            )),
        }
    }
}

/// What a leak does to a `#[leak_test]` whose body panicked (`on_panic`, `LEAKCHECK_ON_PANIC`).
/// Such a test fails with its panic anyway, except a `#[should_panic]` test, which passes on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnPanic {
    /// The leak report is printed after the panic and the panic goes on (the default): a
    /// `#[should_panic]` test that leaks passes.
    Report,
    /// The leak report is printed and, in a `#[should_panic]` test, the panic is swallowed: the
    /// test returns normally and fails with "test did not panic as expected". Other tests fail
    /// with their panic, as with `Report`.
    Fail,
}

impl OnPanic {
    /// Parses `report` or `fail`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "report" => Ok(OnPanic::Report),
            "fail" => Ok(OnPanic::Fail),
            other => Err(format!(
                "unknown on_panic `{}`: expected `report` (print the leaks after the panic) or `fail` (a `#[should_panic]` test that leaks fails)",
                excerpt(other)
            )),
        }
    }
}

/// Where [`Check::finish_test`](crate::Check::finish_test) writes the JSON report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReportDir {
    /// `<target dir>/leakcheck`.
    Target,
    Off,
    Path(PathBuf),
}

impl ReportDir {
    fn parse(v: &str, base: Option<&Path>) -> Self {
        match v.trim() {
            "off" | "none" => ReportDir::Off,
            p => ReportDir::Path(match base {
                Some(b) => b.join(p),
                None => PathBuf::from(p),
            }),
        }
    }
}

/// Which kinds of resources a check tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds {
    /// Tokio tasks of the checked runtime.
    pub tasks: bool,
    /// OS threads.
    pub threads: bool,
    /// File descriptors.
    pub fds: bool,
    /// Child processes.
    pub children: bool,
}

impl Default for Kinds {
    fn default() -> Self {
        Self::ALL
    }
}

impl Kinds {
    /// Every kind.
    pub const ALL: Kinds = Kinds {
        tasks: true,
        threads: true,
        fds: true,
        children: true,
    };

    /// Parses `tasks,threads,fds,children` (any subset, any order). A list that names no kind
    /// (`,`) is an error: a check of no kind would pass every test.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut k = Kinds {
            tasks: false,
            threads: false,
            fds: false,
            children: false,
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "tasks" => k.tasks = true,
                "threads" => k.threads = true,
                "fds" => k.fds = true,
                "children" => k.children = true,
                other => {
                    return Err(format!(
                        "unknown kind `{}`: expected a comma-separated list of tasks, threads, fds, children",
                        excerpt(other)
                    ))
                }
            }
        }
        if k.list().is_empty() {
            return Err(
                "the list names no kind, and a check of no kind would pass every test: list some of tasks, threads, fds, children".into(),
            );
        }
        Ok(k)
    }

    pub(crate) fn list(&self) -> Vec<Kind> {
        [
            (self.tasks, Kind::Task),
            (self.threads, Kind::Thread),
            (self.fds, Kind::Fd),
            (self.children, Kind::Child),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }

    pub(crate) fn any_process(&self) -> bool {
        self.threads || self.fds || self.children
    }
}

/// Configures and starts a [`Check`](crate::Check).
///
/// `Default` takes every setting from the `DEFAULT_*` constants; nothing is read from the
/// environment unless [`with_env`](Self::with_env) is called.
#[derive(Clone, Debug)]
pub struct CheckBuilder {
    pub(crate) label: Option<String>,
    pub(crate) settle: Duration,
    pub(crate) dump_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) backtraces: bool,
    pub(crate) kinds: Kinds,
    pub(crate) rules: RuleSet,
    /// `[[rule]]`s of the configuration file, applied only when named.
    pub(crate) named: RuleSet,
    pub(crate) mode: Mode,
    pub(crate) report_dir: ReportDir,
    pub(crate) hold: Duration,
    /// What a leak does to a `#[leak_test]` whose body panicked; only the harness reads it.
    pub(crate) on_panic: OnPanic,
    /// Whether `#[leak_test]` started this check (then the binary has libtest's harness).
    pub(crate) in_leak_test: bool,
    /// Whether this is the check of a whole test binary (`check_test_binary!`): it holds no
    /// turn, and what checks inside it find is theirs.
    pub(crate) whole_binary: bool,
    /// `#[leak_test(unhandled_panic = "shutdown_runtime")]`: only the harness sets it.
    pub(crate) shutdown_on_panic: bool,
}

impl Default for CheckBuilder {
    fn default() -> Self {
        Self {
            label: None,
            settle: DEFAULT_SETTLE,
            dump_timeout: DEFAULT_DUMP_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            backtraces: DEFAULT_BACKTRACES,
            kinds: Kinds::ALL,
            rules: RuleSet::new(),
            named: RuleSet::new(),
            mode: DEFAULT_MODE,
            report_dir: ReportDir::Target,
            hold: Duration::ZERO,
            on_panic: DEFAULT_ON_PANIC,
            in_leak_test: false,
            whole_binary: false,
            shutdown_on_panic: false,
        }
    }
}

impl CheckBuilder {
    /// Names the check in its report (usually the test's name).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub(crate) fn in_leak_test(mut self) -> Self {
        self.in_leak_test = true;
        self
    }

    /// Sets the settle deadline (default [`DEFAULT_SETTLE`]).
    pub fn settle_deadline(mut self, d: Duration) -> Self {
        self.settle = d;
        self
    }

    /// Sets the task dump timeout (default [`DEFAULT_DUMP_TIMEOUT`]).
    pub fn dump_timeout(mut self, d: Duration) -> Self {
        self.dump_timeout = d;
        self
    }

    /// Sets the runtime shutdown timeout (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Turns spawn backtraces on or off (default [`DEFAULT_BACKTRACES`]).
    pub fn backtraces(mut self, on: bool) -> Self {
        self.backtraces = on;
        self
    }

    /// Chooses which kinds are checked (default: all). At least one must be on: starting a
    /// check of no kind is an error.
    pub fn kinds(mut self, kinds: Kinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// Allows survivors that match `rule`. Rules added in code come before file rules, so the
    /// narrower scope's reason is shown; no rule ever replaces another, so two rules of one name
    /// (from code or a file) are an error when the check starts.
    pub fn allow(mut self, rule: Rule) -> Self {
        let mut rules = RuleSet::new();
        rules.push(rule);
        rules.extend(std::mem::take(&mut self.rules));
        self.rules = rules;
        self
    }

    /// Allows what `spec` names: a `[[rule]]` of the configuration file read by
    /// [`with_env`](Self::with_env) or [`with_file`](Self::with_file), or a `key=regex` pattern
    /// (`thread_name=^rdk:`) that becomes a rule of its own (its reason says it was allowed by
    /// `spec`). An unknown name lists the rules there are; a bad key lists the valid ones.
    pub fn allow_spec(self, spec: &str) -> Result<Self, Error> {
        if spec.contains('=') {
            let reason = format!("allowed by this test: `{spec}`");
            if self.rules.get(spec).is_some_and(|r| r.reason() == reason) {
                return Ok(self); // the same pattern twice
            }
            let rule = Rule::builder(spec, reason).pattern_spec(spec)?.build()?;
            return Ok(self.allow(rule));
        }
        match self.named.get(spec.trim()) {
            Some(rule) => {
                let rule = rule.clone();
                Ok(self.allow(rule))
            }
            None => {
                const SHOWN: usize = 20;
                let mut known: Vec<String> = self
                    .named
                    .iter()
                    .take(SHOWN)
                    .map(|r| excerpt(r.name()).to_string())
                    .collect();
                if self.named.len() > SHOWN {
                    known.push(format!("and {} more", self.named.len() - SHOWN));
                }
                Err(Error::Rule {
                    rule: spec.to_string(),
                    origin: None,
                    reason: if known.is_empty() {
                        "no `[[rule]]` of that name: leakcheck.toml defines none (or write `key=regex`)".into()
                    } else {
                        format!(
                            "no `[[rule]]` of that name in leakcheck.toml: it defines {}",
                            known.join(", ")
                        )
                    },
                })
            }
        }
    }

    /// Sets what an unknown survivor does in [`Check::finish_test`](crate::Check::finish_test)
    /// (default [`DEFAULT_MODE`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the directory where [`Check::finish_test`](crate::Check::finish_test) writes the
    /// JSON report (`None`: write none). Default: [`DEFAULT_REPORT_DIR`] in the target directory.
    pub fn report_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.report_dir = dir.map_or(ReportDir::Off, ReportDir::Path);
        self
    }

    /// On an unknown survivor, keeps the process (and the runtime) alive this long before
    /// shutting down, so that a person can attach tokio-console or a debugger (default: 0).
    pub fn hold_on_leak(mut self, d: Duration) -> Self {
        self.hold = d;
        self
    }

    /// Applies a configuration file: its settings, and its rules after the ones already set.
    pub fn with_file(self, path: &Path) -> Result<Self, Error> {
        let file = FileConfig::read_cached(path)?;
        self.apply_file(file)
    }

    fn apply_file(mut self, file: FileConfig) -> Result<Self, Error> {
        let s = file.settings;
        if let Some(ms) = s.settle_ms {
            self.settle = Duration::from_millis(ms);
        }
        if let Some(ms) = s.dump_timeout_ms {
            self.dump_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = s.shutdown_timeout_ms {
            self.shutdown_timeout = Duration::from_millis(ms);
        }
        if let Some(b) = s.backtrace {
            self.backtraces = b;
        }
        if let Some(k) = s.kinds {
            // `kinds = []` and `kinds = [""]` name no kind: an error, as `LEAKCHECK_KINDS=,` is.
            self.kinds = Kinds::parse(&k.join(",")).map_err(|reason| Error::ParseFile {
                path: file.path.clone(),
                message: format!("settings.kinds: {reason}"),
            })?;
        }
        if let Some(m) = &s.mode {
            self.mode = Mode::parse(m).map_err(|reason| Error::ParseFile {
                path: file.path.clone(),
                message: format!("settings.mode: {reason}"),
            })?;
        }
        if let Some(d) = &s.report_dir {
            self.report_dir = ReportDir::parse(d, file.path.parent());
        }
        if let Some(secs) = s.hold_secs {
            self.hold = Duration::from_secs(secs);
        }
        if let Some(p) = &s.on_panic {
            self.on_panic = OnPanic::parse(p).map_err(|reason| Error::ParseFile {
                path: file.path.clone(),
                message: format!("settings.on_panic: {reason}"),
            })?;
        }
        self.rules.extend(file.rules);
        self.named.extend(file.named);
        unique_names(self.rules.iter().chain(self.named.iter()))?;
        Ok(self)
    }

    /// Checks what the setters cannot: that some kind is checked (a check of no kind would pass
    /// every test) and that no two rules share a name (a report names the rule that allowed a
    /// survivor, and `allow = ["name"]` picks a `[[rule]]` by name). The start functions call
    /// it before anything is measured.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.kinds.list().is_empty() {
            return Err(Error::Setting {
                setting: "CheckBuilder::kinds",
                reason: "every kind is off, and a check of no kind would pass every test: turn on at least one of tasks, threads, fds, children".into(),
            });
        }
        unique_names(self.rules.iter().chain(self.named.iter()))
    }

    /// Reads the environment: the configuration file (`LEAKCHECK_CONFIG`, or `leakcheck.toml`
    /// found upward from `CARGO_MANIFEST_DIR` or the current directory), then each
    /// `LEAKCHECK_*` variable over it. An empty variable counts as unset; an invalid value is an
    /// error naming the variable.
    pub fn with_env(self) -> Result<Self, Error> {
        self.with_env_from(|k| std::env::var(k).ok())
    }

    pub(crate) fn with_env_from(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let file = match get("LEAKCHECK_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => get("CARGO_MANIFEST_DIR")
                .map(PathBuf::from)
                .or_else(|| std::env::current_dir().ok())
                .and_then(|d| FileConfig::find(&d)),
        };
        if let Some(path) = file {
            self = self.with_file(&path)?;
        }
        let millis = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| "expected a whole number of milliseconds".to_string())
        };
        if let Some(d) = env_var(&get, "LEAKCHECK_SETTLE_MS", millis)? {
            self.settle = d;
        }
        if let Some(d) = env_var(&get, "LEAKCHECK_DUMP_TIMEOUT_MS", millis)? {
            self.dump_timeout = d;
        }
        if let Some(d) = env_var(&get, "LEAKCHECK_SHUTDOWN_TIMEOUT_MS", millis)? {
            self.shutdown_timeout = d;
        }
        if let Some(d) = env_var(&get, "LEAKCHECK_HOLD_SECS", |v| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| "expected a whole number of seconds".to_string())
        })? {
            self.hold = d;
        }
        if let Some(b) = env_var(&get, "LEAKCHECK_BACKTRACE", |v| match v {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err("expected one of 1, 0, true, false, on, off".to_string()),
        })? {
            self.backtraces = b;
        }
        if let Some(k) = env_var(&get, "LEAKCHECK_KINDS", Kinds::parse)? {
            self.kinds = k;
        }
        if let Some(m) = env_var(&get, "LEAKCHECK_MODE", Mode::parse)? {
            self.mode = m;
        }
        if let Some(p) = env_var(&get, "LEAKCHECK_ON_PANIC", OnPanic::parse)? {
            self.on_panic = p;
        }
        if let Some(v) = get("LEAKCHECK_REPORT_DIR") {
            self.report_dir = ReportDir::parse(&v, None);
        }
        Ok(self)
    }
}

/// One variable: unset (or empty, or only blanks) is `None`; a value `parse` rejects is an error
/// naming the variable and the value (an excerpt of it when long).
fn env_var<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    get(var)
        .map(|v| {
            parse(v.trim()).map_err(|reason| Error::Env {
                var,
                value: v.clone(),
                reason,
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn no_file() -> (&'static str, &'static str) {
        ("CARGO_MANIFEST_DIR", "/nonexistent-leakcheck-dir")
    }

    #[test]
    fn defaults_come_from_the_constants() {
        let b = CheckBuilder::default();
        assert_eq!(b.settle, DEFAULT_SETTLE);
        assert_eq!(b.dump_timeout, DEFAULT_DUMP_TIMEOUT);
        assert_eq!(b.backtraces, DEFAULT_BACKTRACES);
        assert_eq!(b.kinds, Kinds::ALL);
    }

    #[test]
    fn env_overrides_and_empty_counts_as_unset() {
        let b = CheckBuilder::default()
            .with_env_from(env(&[
                no_file(),
                ("LEAKCHECK_SETTLE_MS", "250"),
                ("LEAKCHECK_BACKTRACE", "off"),
                ("LEAKCHECK_KINDS", "tasks, fds"),
                ("LEAKCHECK_DUMP_TIMEOUT_MS", ""),
            ]))
            .unwrap();
        assert_eq!(b.settle, Duration::from_millis(250));
        assert!(!b.backtraces);
        assert_eq!(
            b.kinds,
            Kinds {
                tasks: true,
                threads: false,
                fds: true,
                children: false
            }
        );
        assert_eq!(b.dump_timeout, DEFAULT_DUMP_TIMEOUT);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_the_value() {
        for (var, value) in [
            ("LEAKCHECK_SETTLE_MS", "1s"),
            ("LEAKCHECK_BACKTRACE", "maybe"),
            ("LEAKCHECK_KINDS", "tasks,sockets"),
            ("LEAKCHECK_MODE", "loud"),
            ("LEAKCHECK_HOLD_SECS", "1m"),
        ] {
            let e = CheckBuilder::default()
                .with_env_from(env(&[no_file(), (var, value)]))
                .unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(var) && msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn env_wins_over_the_file_and_the_file_over_the_default() {
        let dir = std::env::temp_dir().join(format!("leakcheck-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("member")).unwrap();
        std::fs::write(
            dir.join("leakcheck.toml"),
            "[settings]\nsettle_ms = 300\ndump_timeout_ms = 400\n\n[[allow]]\nname = \"f\"\nreason = \"file\"\nthread_name = \"x\"\n",
        )
        .unwrap();
        let member = dir.join("member").display().to_string();
        let b = CheckBuilder::default()
            .with_env_from(env(&[
                ("CARGO_MANIFEST_DIR", &member),
                ("LEAKCHECK_SETTLE_MS", "50"),
            ]))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(b.settle, Duration::from_millis(50));
        assert_eq!(b.dump_timeout, Duration::from_millis(400));
        assert_eq!(b.rules.iter().map(|r| r.name()).collect::<Vec<_>>(), ["f"]);
    }

    #[test]
    fn code_rules_come_first_and_file_rules_add_up() {
        let b = CheckBuilder::default()
            .allow(Rule::builder("code", "c").thread_name("a").build().unwrap())
            .apply_file(
                FileConfig::parse(
                    "[[allow]]\nname = \"file\"\nreason = \"f\"\nthread_name = \"b\"\n",
                    Path::new("leakcheck.toml"),
                )
                .unwrap(),
            )
            .unwrap()
            .allow(
                Rule::builder("narrow", "n")
                    .thread_name("c")
                    .build()
                    .unwrap(),
            );
        let names: Vec<_> = b.rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["narrow", "code", "file"]);
    }

    #[test]
    fn mode_report_dir_and_hold_come_from_the_file_then_the_environment() {
        let file = FileConfig::parse(
            "[settings]\nmode = \"warn\"\nreport_dir = \"reports\"\nhold_secs = 5\n",
            Path::new("/ws/leakcheck.toml"),
        )
        .unwrap();
        let b = CheckBuilder::default().apply_file(file).unwrap();
        assert_eq!(b.mode, Mode::Warn);
        assert_eq!(b.report_dir, ReportDir::Path("/ws/reports".into()));
        assert_eq!(b.hold, Duration::from_secs(5));
        let b = b
            .with_env_from(env(&[
                no_file(),
                ("LEAKCHECK_MODE", "fail"),
                ("LEAKCHECK_REPORT_DIR", "off"),
            ]))
            .unwrap();
        assert_eq!(b.mode, Mode::Fail);
        assert_eq!(b.report_dir, ReportDir::Off);
        let e = CheckBuilder::default()
            .apply_file(
                FileConfig::parse("[settings]\nmode = \"loud\"\n", Path::new("x.toml")).unwrap(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("settings.mode"), "{e}");
    }

    fn thread_rule(name: &str) -> Rule {
        Rule::builder(name, "code")
            .thread_name("x")
            .build()
            .unwrap()
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, Path::new("leakcheck.toml")).unwrap()
    }

    #[test]
    fn a_list_of_no_kind_is_an_error_and_an_empty_variable_is_unset() {
        for value in [",", " , ", ",,"] {
            let e = CheckBuilder::default()
                .with_env_from(env(&[no_file(), ("LEAKCHECK_KINDS", value)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "read environment variable LEAKCHECK_KINDS={value:?}: the list names no kind"
                )),
                "{e}"
            );
        }
        for value in ["", "  "] {
            let b = CheckBuilder::default()
                .with_env_from(env(&[no_file(), ("LEAKCHECK_KINDS", value)]))
                .unwrap();
            assert_eq!(b.kinds, Kinds::ALL);
        }
        for kinds in ["[]", "[\"\"]", "[\" \", \"\"]"] {
            let e = CheckBuilder::default()
                .apply_file(file(&format!("[settings]\nkinds = {kinds}\n")))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(
                    "parse rules file leakcheck.toml: settings.kinds: the list names no kind"
                ),
                "{e}"
            );
        }
        assert!(Kinds::parse("tasks,,fds").is_ok());
    }

    #[test]
    fn a_check_of_no_kind_is_an_error_when_it_starts() {
        let none = Kinds {
            tasks: false,
            threads: false,
            fds: false,
            children: false,
        };
        let e = CheckBuilder::default()
            .kinds(none)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("configure CheckBuilder::kinds: every kind is off"),
            "{e}"
        );
        CheckBuilder::default().validate().unwrap();
    }

    #[test]
    fn on_panic_comes_from_the_file_then_the_environment() {
        assert_eq!(CheckBuilder::default().on_panic, OnPanic::Report);
        let b = CheckBuilder::default()
            .apply_file(file("[settings]\non_panic = \"fail\"\n"))
            .unwrap();
        assert_eq!(b.on_panic, OnPanic::Fail);
        let b = b
            .with_env_from(env(&[no_file(), ("LEAKCHECK_ON_PANIC", "report")]))
            .unwrap();
        assert_eq!(b.on_panic, OnPanic::Report);
        let e = CheckBuilder::default()
            .with_env_from(env(&[no_file(), ("LEAKCHECK_ON_PANIC", "abort")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("LEAKCHECK_ON_PANIC=\"abort\""), "{e}");
        let e = CheckBuilder::default()
            .apply_file(file("[settings]\non_panic = \"abort\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("settings.on_panic: unknown on_panic `abort`"),
            "{e}"
        );
    }

    #[test]
    fn a_long_value_is_quoted_as_an_excerpt() {
        let long = "7".repeat(10_000_000);
        for (var, value) in [
            ("LEAKCHECK_SETTLE_MS", format!("{long}ms")),
            ("LEAKCHECK_KINDS", format!("tasks,{long}")),
            ("LEAKCHECK_MODE", long.clone()),
            ("LEAKCHECK_ON_PANIC", long.clone()),
        ] {
            let e = CheckBuilder::default()
                .with_env_from(env(&[no_file(), (var, &value)]))
                .unwrap_err()
                .to_string();
            assert!(e.len() < 1024, "{var}: {} bytes", e.len());
            assert!(e.contains(var) && e.contains("7777"), "{e}");
            assert!(
                e.contains(&format!("({} bytes in all)", value.len())),
                "{e}"
            );
        }
    }

    #[test]
    fn two_rules_of_one_name_from_code_and_file_are_an_error() {
        let f = "[[allow]]\nname = \"x\"\nreason = \"f\"\nthread_name = \"b\"\n";
        // The code rule first, then the file.
        let e = CheckBuilder::default()
            .allow(thread_rule("x"))
            .apply_file(file(f))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "build rule `x`: two rules have this name, a rule added in code (reason \"code\") and `[[allow]]` #1 at line 2 of leakcheck.toml; give each rule a name of its own: a report names the rule that allowed a survivor, and `allow = [\"name\"]` picks a `[[rule]]` by its name"
        );
        // The file first, then the code rule: found when the check starts.
        let b = CheckBuilder::default()
            .apply_file(file(f))
            .unwrap()
            .allow(thread_rule("x"));
        let e = b.validate().unwrap_err().to_string();
        assert!(
            e.contains("a rule added in code (reason \"code\") and `[[allow]]` #1 at line 2 of leakcheck.toml"),
            "{e}"
        );
        // Two rules from code.
        let b = CheckBuilder::default()
            .allow(thread_rule("y"))
            .allow(Rule::builder("y", "other").fd_target("z").build().unwrap());
        let e = b.validate().unwrap_err().to_string();
        assert!(
            e.contains("a rule added in code (reason \"other\") and a rule added in code (reason \"code\")"),
            "{e}"
        );
        // A `[[rule]]` against a code rule: `allow = ["x"]` would be ambiguous.
        let e = CheckBuilder::default()
            .allow(thread_rule("x"))
            .apply_file(file(&f.replace("[[allow]]", "[[rule]]")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("and `[[rule]]` #1 at line 2 of leakcheck.toml"),
            "{e}"
        );
    }

    #[test]
    fn a_rule_allowed_by_name_twice_is_one_rule() {
        let b = CheckBuilder::default()
            .apply_file(file(
                "[[rule]]\nname = \"rdk\"\nreason = \"r\"\nthread_name = \"^rdk:\"\n",
            ))
            .unwrap()
            .allow_spec("rdk")
            .unwrap()
            .allow_spec("rdk")
            .unwrap()
            .allow_spec("fd_target=^pipe:")
            .unwrap()
            .allow_spec("fd_target=^pipe:")
            .unwrap();
        b.validate().unwrap();
        let names: Vec<_> = b.rules.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["fd_target=^pipe:", "rdk", "rdk"]);
    }

    #[test]
    fn an_unknown_rule_name_lists_a_bounded_number_of_names() {
        let text: String = (0..100)
            .map(|i| format!("[[rule]]\nname = \"r{i}\"\nreason = \"r\"\nthread_name = \"x\"\n"))
            .collect();
        let e = CheckBuilder::default()
            .apply_file(file(&text))
            .unwrap()
            .allow_spec("nope")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("it defines r0, r1,") && e.ends_with("r19, and 80 more"),
            "{e}"
        );
    }

    #[test]
    fn named_rules_apply_only_when_allowed_by_name() {
        let file = FileConfig::parse(
            "[[rule]]\nname = \"rdk\"\nreason = \"r\"\nthread_name = \"^rdk:\"\n",
            Path::new("leakcheck.toml"),
        )
        .unwrap();
        let b = CheckBuilder::default().apply_file(file).unwrap();
        assert!(b.rules.is_empty());
        let b = b.allow_spec("rdk").unwrap();
        assert_eq!(
            b.rules.iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["rdk"]
        );
        let e = b.clone().allow_spec("kafka").unwrap_err().to_string();
        assert!(e.contains("`kafka`") && e.contains("it defines rdk"), "{e}");
        let b = b.allow_spec("fd_target=^pipe:").unwrap();
        assert_eq!(b.rules.iter().next().unwrap().name(), "fd_target=^pipe:");
    }
}
