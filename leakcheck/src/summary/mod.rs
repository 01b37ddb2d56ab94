//! `leakcheck summary`: a whole run at a glance, from the JSON reports its tests left in the
//! report directory. One test's report says what leaked there; the summary says what a suite
//! leaks, which allowances carry it, and which allowances no test needs any more (a stale
//! allowance hides the next real leak). It renders the same tables as text, as one
//! self-contained HTML page, and as JUnit XML for CI.

mod html;
mod junit;
mod read;
mod tables;
mod text;

use std::path::{Path, PathBuf};

use crate::config::DEFAULT_REPORT_DIR;
use crate::rules::FileConfig;
use crate::SCHEMA_VERSION;

/// What `leakcheck summary` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The report directory (default: [`default_dir`]).
    pub dir: Option<PathBuf>,
    /// Where to write the HTML page.
    pub html: Option<PathBuf>,
    /// Where to write the JUnit XML.
    pub junit: Option<PathBuf>,
    /// The `leakcheck.toml` whose rules are checked for use (default: the one the library
    /// finds).
    pub config: Option<PathBuf>,
}

/// Why the summary could not be made. Messages read after "failed to ...".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SummaryError {
    /// The report directory cannot be read (usually: it does not exist yet).
    #[error("read report directory {}: {source}; run the tests first (each leak test writes its report there)", path.display())]
    NoDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The report directory holds no report.
    #[error("read report directory {}: it holds no JSON report; run the tests first (each leak test writes its report there)", path.display())]
    Empty {
        /// The directory.
        path: PathBuf,
    },
    /// A report cannot be read.
    #[error("read report {}: {source}", path.display())]
    Read {
        /// The report.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A report is not JSON, or not a leakcheck report.
    #[error("read report {}: not a leakcheck JSON report: {message}", path.display())]
    Malformed {
        /// The report.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A report was written by a leakcheck of another schema version.
    #[error("read report {}: {}, this leakcheck reads version {SCHEMA_VERSION}; rerun the tests with this version", path.display(), found.map_or("no schema version".to_string(), |v| format!("schema version {v}")))]
    Schema {
        /// The report.
        path: PathBuf,
        /// Its version (`None`: it has none).
        found: Option<u32>,
    },
    /// The configuration file cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] crate::Error),
    /// An output file cannot be written.
    #[error("write {what} {}: {source}", path.display())]
    Write {
        /// `html page` or `junit xml`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The report directory when none is given: `$CARGO_TARGET_DIR/leakcheck` if the variable is
/// set, else `target/leakcheck` (relative to the current directory).
pub fn default_dir() -> PathBuf {
    default_dir_from(std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
}

fn default_dir_from(target: Option<PathBuf>) -> PathBuf {
    target
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("target"))
        .join(DEFAULT_REPORT_DIR)
}

/// Reads the reports, writes the files asked for, and returns the text summary.
pub fn run(opts: &Options) -> Result<String, SummaryError> {
    let dir = opts.dir.clone().unwrap_or_else(default_dir);
    let config = match &opts.config {
        Some(p) => Some(p.clone()),
        None => find_config(),
    };
    summarize(&dir, config.as_deref(), opts)
}

/// The `leakcheck.toml` a check started here would read: `LEAKCHECK_CONFIG`, else the nearest
/// one upward from the current directory.
fn find_config() -> Option<PathBuf> {
    std::env::var_os("LEAKCHECK_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| FileConfig::find(&std::env::current_dir().ok()?))
}

fn summarize(dir: &Path, config: Option<&Path>, opts: &Options) -> Result<String, SummaryError> {
    let runs = read::read_dir(dir)?;
    let config = config.map(FileConfig::read).transpose()?;
    let summary = tables::Summary::new(&runs, config.as_ref());
    if let Some(path) = &opts.html {
        write(path, "html page", html::page(&summary).as_bytes())?;
    }
    if let Some(path) = &opts.junit {
        write(path, "junit xml", junit::xml(&runs).as_bytes())?;
    }
    Ok(text::render(&summary, dir))
}

fn write(path: &Path, what: &'static str, bytes: &[u8]) -> Result<(), SummaryError> {
    std::fs::write(path, bytes).map_err(|source| SummaryError::Write {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
