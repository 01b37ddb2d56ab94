//! Loading a run's reports: every `*.json` of the report directory, each checked for the schema
//! version this leakcheck writes before it is read, so that a report of another version is
//! refused by name rather than summarized wrongly.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SummaryError;
use crate::report::{Kind, SCHEMA_VERSION};

/// One JSON report as written by [`Report::to_json`](crate::Report::to_json) (survivors
/// grouped). Only what the summary shows is read; unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Run {
    /// The file's name without `.json`: the label when the report has none.
    #[serde(skip)]
    pub(crate) file_stem: String,
    pub(crate) label: Option<String>,
    pub(crate) clean: bool,
    #[serde(default)]
    pub(crate) survivors: Vec<Group>,
    pub(crate) settle: crate::report::SettleStats,
    #[serde(default)]
    pub(crate) lifecycle: Lifecycle,
    #[serde(default)]
    pub(crate) notes: Vec<Note>,
}

impl Run {
    /// The test's name: the label, else the file's stem.
    pub(crate) fn name(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.file_stem)
    }

    pub(crate) fn unknown(&self) -> impl Iterator<Item = &Group> {
        self.survivors.iter().filter(|g| g.rule().is_none())
    }

    pub(crate) fn known(&self) -> impl Iterator<Item = &Group> {
        self.survivors.iter().filter(|g| g.rule().is_some())
    }
}

/// Survivors that read alike (a JSON group).
#[derive(Debug, Deserialize)]
pub(crate) struct Group {
    pub(crate) kind: Kind,
    pub(crate) component: String,
    /// `known` or `unknown`.
    pub(crate) status: String,
    pub(crate) rule: Option<String>,
    pub(crate) reason: Option<String>,
    pub(crate) origin: Option<String>,
    pub(crate) description: String,
    pub(crate) count: usize,
    #[serde(default)]
    pub(crate) ids: Vec<String>,
    pub(crate) spawn_location: Option<String>,
    #[serde(default)]
    pub(crate) names: Vec<String>,
    pub(crate) user_frame: Option<Frame>,
    pub(crate) via: Option<Frame>,
    pub(crate) await_trace: Option<AwaitTrace>,
}

impl Group {
    /// The rule that allowed the group, if known.
    pub(crate) fn rule(&self) -> Option<&str> {
        match self.status.as_str() {
            "known" => Some(self.rule.as_deref().unwrap_or("(unnamed rule)")),
            _ => None,
        }
    }
}

/// A backtrace frame.
#[derive(Debug, Deserialize)]
pub(crate) struct Frame {
    pub(crate) function: String,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
}

impl Frame {
    /// `function at file:line`, the function without its trailing `::{{closure}}`s: the
    /// function a person wrote.
    pub(crate) fn display(&self) -> String {
        let mut f = self.function.as_str();
        while let Some(rest) = f.strip_suffix("::{{closure}}") {
            f = rest;
        }
        match (&self.file, self.line) {
            (Some(file), Some(l)) => format!("{f} at {file}:{l}"),
            (Some(file), None) => format!("{f} at {file}"),
            _ => f.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AwaitTrace {
    #[serde(default)]
    pub(crate) leaves: Vec<AwaitLeaf>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AwaitLeaf {
    pub(crate) resource: Option<String>,
    #[serde(default)]
    pub(crate) frames: Vec<Frame>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Lifecycle {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<LifecycleRow>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LifecycleRow {
    pub(crate) kind: Kind,
    pub(crate) component: String,
    pub(crate) counts: Vec<usize>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Note {
    pub(crate) message: String,
}

/// Just the version, read first: a report of another version may not parse as this one.
#[derive(Deserialize)]
struct Version {
    schema_version: Option<u32>,
}

/// Reads every `*.json` report of `dir`, sorted by file name. A missing or empty directory, an
/// unreadable or malformed report, or one of another schema version is an error naming it.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<Run>, SummaryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SummaryError::NoDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        // A report being written ends with `.json.<pid>.tmp`, so it is not listed.
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    if paths.is_empty() {
        return Err(SummaryError::Empty {
            path: dir.to_path_buf(),
        });
    }
    paths.sort();
    paths.iter().map(|p| read_one(p)).collect()
}

fn read_one(path: &Path) -> Result<Run, SummaryError> {
    let text = std::fs::read_to_string(path).map_err(|source| SummaryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |e: serde_json::Error| SummaryError::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let version: Version = serde_json::from_str(&text).map_err(malformed)?;
    match version.schema_version {
        Some(SCHEMA_VERSION) => {}
        found => {
            return Err(SummaryError::Schema {
                path: path.to_path_buf(),
                found,
            })
        }
    }
    let mut run: Run = serde_json::from_str(&text).map_err(malformed)?;
    run.file_stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(run)
}
