use serde::{Deserialize, Serialize};

use crate::tasks::{AwaitTrace, Frame};

/// The JSON schema version of [`Report::to_json`]; bumped on any incompatible change. Version 2
/// groups survivors as the text does (`count`, `ids`, `names`, `parents` instead of one entry
/// per survivor with its `id`, `name` and `parent`).
pub const SCHEMA_VERSION: u32 = 2;

/// A kind of resource leakcheck tracks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// A tokio task of the checked runtime.
    #[default]
    Task,
    /// An OS thread of this process.
    Thread,
    /// A file descriptor (socket, pipe, file, eventfd, ...).
    Fd,
    /// A child process.
    Child,
}

impl Kind {
    /// The plural noun used in reports.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Task => "tasks",
            Kind::Thread => "threads",
            Kind::Fd => "file descriptors",
            Kind::Child => "child processes",
        }
    }

    /// The singular noun used in reports.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Thread => "thread",
            Kind::Fd => "file descriptor",
            Kind::Child => "child process",
        }
    }
}

/// Whether a survivor is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Matched a rule: allowed, with the rule's reason.
    Known {
        /// The rule's name.
        rule: String,
        /// The rule's reason.
        reason: String,
        /// Where the rule was defined, if in a file.
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// Matched no rule: a leak, and the check fails.
    Unknown,
}

/// One resource created after the baseline and still alive when the check ended.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Survivor {
    /// What it is.
    pub kind: Kind,
    /// Task id, tid, descriptor number or pid.
    pub id: String,
    /// The owner: a crate (and module) for tasks, a thread family, a descriptor type, a program.
    pub component: String,
    /// Known (with the rule) or unknown.
    #[serde(flatten)]
    pub status: Status,
    /// One line: the spawn site, thread name, descriptor target or command line.
    pub description: String,
    /// Where a task was spawned (`file:line:column`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_location: Option<String>,
    /// A task's or thread's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The task that spawned this task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The first spawn backtrace frame in the user's own code (the workspace under test: not
    /// the runtime, not a registry crate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_frame: Option<Frame>,
    /// When a library spawned the task: the library function the user's frame called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Frame>,
    /// The spawn backtrace outside the runtime, innermost first (when backtraces are on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backtrace: Vec<Frame>,
    /// Where a task is suspended (from a task dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub await_trace: Option<AwaitTrace>,
    /// How long it had been alive when the check ended, in milliseconds (tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<f64>,
}

/// A resource that was still alive when settling began and exited before it ended.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Lingered {
    /// What it was.
    pub kind: Kind,
    /// Its component.
    pub component: String,
    /// Its description, as for a survivor.
    pub description: String,
    /// How long after the body ended it was seen gone, in milliseconds.
    pub exited_after_ms: f64,
}

/// How settling went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SettleStats {
    /// Time from the start of settling to the verdict.
    pub elapsed_ms: f64,
    /// The deadline in force.
    pub deadline_ms: f64,
    /// How many times survivors were collected.
    pub rounds: u32,
    /// Whether the deadline passed with unknown survivors left.
    pub timed_out: bool,
    /// Threads of other leak checks waiting for their turn (one check of process-wide kinds
    /// runs at a time), which were not counted.
    pub waiting_threads: usize,
    /// Threads of other tests running in parallel in this process (`cargo test`), told apart
    /// by their names and not counted.
    pub test_threads: usize,
    /// Descriptors those tests' threads opened (the hooks record which thread opened each),
    /// not counted.
    pub test_fds: usize,
    /// Child processes those tests started (their creating thread was named after another
    /// test; the hooks record it), with their descendants, not counted.
    pub test_children: usize,
}

impl SettleStats {
    /// `settled in 1.4 ms (2 rounds, deadline 1000 ms)`, and why when the deadline passed.
    pub(crate) fn line(&self) -> String {
        format!(
            "settled in {:.1} ms ({} rounds, deadline {:.0} ms){}",
            self.elapsed_ms,
            self.rounds,
            self.deadline_ms,
            if self.timed_out {
                ": deadline passed with unknown survivors left"
            } else {
                ""
            }
        )
    }
}

/// Live counts per component at the baseline, at each checkpoint and at the end.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Lifecycle {
    /// `baseline`, the checkpoint names in order, then `final`.
    pub columns: Vec<String>,
    /// One row per kind and component, sorted.
    pub rows: Vec<LifecycleRow>,
}

/// One component's live counts, one per column.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LifecycleRow {
    /// The kind.
    pub kind: Kind,
    /// The component.
    pub component: String,
    /// Live count per column.
    pub counts: Vec<usize>,
}

/// Something the check could not do fully, said in the report rather than passed over.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Note {
    /// The kind it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// What happened and what it means for the verdict.
    pub message: String,
}

/// The outcome of a check.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The check's label (usually the test name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether no unknown survivor is left.
    pub clean: bool,
    /// Which kinds were checked.
    pub kinds: Vec<Kind>,
    /// Every survivor, unknown first.
    pub survivors: Vec<Survivor>,
    /// Resources that lingered after the body and exited while settling.
    pub lingered: Vec<Lingered>,
    /// How settling went.
    pub settle: SettleStats,
    /// Live counts per component over the check.
    pub lifecycle: Lifecycle,
    /// What could not be checked fully.
    pub notes: Vec<Note>,
}

impl Report {
    /// The unknown survivors: the leaks.
    pub fn unknown(&self) -> impl Iterator<Item = &Survivor> {
        self.survivors
            .iter()
            .filter(|s| s.status == Status::Unknown)
    }

    /// The survivors allowed by a rule.
    pub fn known(&self) -> impl Iterator<Item = &Survivor> {
        self.survivors
            .iter()
            .filter(|s| s.status != Status::Unknown)
    }

    /// Whether the check found no unknown survivor.
    pub fn is_clean(&self) -> bool {
        self.clean
    }

    /// Panics with the text report if any unknown survivor is left.
    #[track_caller]
    pub fn assert_clean(&self) {
        if !self.clean {
            panic!("{}", self.to_text());
        }
    }

    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            label: None,
            clean: true,
            kinds: Vec::new(),
            survivors: Vec::new(),
            lingered: Vec::new(),
            settle: SettleStats::default(),
            lifecycle: Lifecycle {
                columns: Vec::new(),
                rows: Vec::new(),
            },
            notes: Vec::new(),
        }
    }
}
