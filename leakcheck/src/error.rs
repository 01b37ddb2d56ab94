//! Errors of the engine. Messages are lowercase fragments that read after "failed to ...".

use std::path::PathBuf;

/// Why a check could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds a value that does not parse.
    #[error("read environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable, for example `LEAKCHECK_SETTLE_MS`.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The rules file could not be read.
    #[error("read rules file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is not valid TOML or holds an unknown key.
    #[error("parse rules file {}: {message}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key, line and column).
        message: String,
    },
    /// A rule is invalid: a bad regex, an empty rule, a missing reason.
    #[error("build rule `{rule}`{}: {reason}", origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default())]
    Rule {
        /// The rule's name.
        rule: String,
        /// Where the rule came from (a file path), if not from code.
        origin: Option<String>,
        /// What is wrong, naming the key and the value.
        reason: String,
    },
    /// A setting given in code makes the check meaningless (no kind to check).
    #[error("configure {setting}: {reason}")]
    Setting {
        /// The setter, for example `CheckBuilder::kinds`.
        setting: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The instrumented runtime could not be built.
    #[error("build the instrumented tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
