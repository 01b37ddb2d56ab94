//! The summary's tables, computed once from the reports and the configuration; the text, HTML
//! and JUnit renderings only lay them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::read::{Group, Run};
use crate::report::Kind;
use crate::rules::FileConfig;

/// At most this many settles are listed, slowest first.
pub(crate) const SLOWEST: usize = 10;

pub(crate) struct Summary<'a> {
    pub(crate) tests: usize,
    pub(crate) clean: usize,
    /// The failing tests, in file order.
    pub(crate) failed: Vec<&'a Run>,
    /// Known survivors per rule, most survivors first.
    pub(crate) known: Vec<RuleRow<'a>>,
    /// Unknown survivors per kind and component, most first.
    pub(crate) by_component: Vec<Row>,
    /// Unknown survivors per spawning frame in the user's code, most first.
    pub(crate) by_frame: Vec<Row>,
    /// The [`SLOWEST`] slowest settles, slowest first.
    pub(crate) slowest: Vec<&'a Run>,
    pub(crate) config: Config,
}

pub(crate) struct RuleRow<'a> {
    pub(crate) rule: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) survivors: usize,
    pub(crate) tests: usize,
}

/// Unknown survivors that share a key, and in how many tests.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) key: String,
    pub(crate) survivors: usize,
    pub(crate) tests: usize,
}

/// The configured rules, and which of them no report used.
pub(crate) enum Config {
    /// No file; the files the reports' known survivors name as their rules' origin, if any
    /// (the file the tests read, when the summary runs from elsewhere).
    NotFound { origins: Vec<String> },
    Read {
        path: PathBuf,
        rules: usize,
        /// Rules that allowed no survivor of any report, in file order.
        unused: Vec<Unused>,
    },
}

pub(crate) struct Unused {
    pub(crate) name: String,
    /// `[[allow]]` (every check) or `[[rule]]` (checks that name it).
    pub(crate) table: &'static str,
    pub(crate) line: Option<usize>,
    pub(crate) reason: String,
}

/// Each table's columns and cells, shared by the text and the HTML page.
impl RuleRow<'_> {
    pub(crate) const HEADERS: [&'static str; 4] = ["survivors", "tests", "rule", "reason"];

    pub(crate) fn cells(&self) -> Vec<String> {
        vec![
            self.survivors.to_string(),
            self.tests.to_string(),
            self.rule.to_string(),
            self.reason.to_string(),
        ]
    }
}

impl Row {
    pub(crate) fn cells(&self) -> Vec<String> {
        vec![
            self.survivors.to_string(),
            self.tests.to_string(),
            self.key.clone(),
        ]
    }
}

impl Unused {
    pub(crate) const HEADERS: [&'static str; 4] = ["table", "rule", "at", "reason"];

    pub(crate) fn cells(&self) -> Vec<String> {
        vec![
            self.table.to_string(),
            self.name.clone(),
            self.line.map(|l| format!("line {l}")).unwrap_or_default(),
            self.reason.clone(),
        ]
    }
}

impl<'a> Summary<'a> {
    pub(crate) fn new(runs: &'a [Run], config: Option<&FileConfig>) -> Self {
        let failed: Vec<&Run> = runs.iter().filter(|r| !r.clean).collect();

        let mut known: BTreeMap<&str, (&str, usize, BTreeSet<usize>)> = BTreeMap::new();
        for (i, run) in runs.iter().enumerate() {
            for g in run.known() {
                let rule = g.rule().unwrap_or_default();
                let e = known.entry(rule).or_insert((
                    g.reason.as_deref().unwrap_or(""),
                    0,
                    BTreeSet::new(),
                ));
                e.1 += g.count;
                e.2.insert(i);
            }
        }
        let mut known: Vec<RuleRow> = known
            .into_iter()
            .map(|(rule, (reason, survivors, tests))| RuleRow {
                rule,
                reason,
                survivors,
                tests: tests.len(),
            })
            .collect();
        known.sort_by_key(|r| std::cmp::Reverse((r.survivors, r.tests)));

        let mut slowest: Vec<&Run> = runs.iter().collect();
        slowest.sort_by(|a, b| {
            b.settle
                .elapsed_ms
                .total_cmp(&a.settle.elapsed_ms)
                .then_with(|| a.name().cmp(b.name()))
        });
        slowest.truncate(SLOWEST);

        let used: BTreeSet<&str> = runs
            .iter()
            .flat_map(|r| r.known())
            .filter_map(Group::rule)
            .collect();
        let config = match config {
            None => Config::NotFound {
                origins: runs
                    .iter()
                    .flat_map(|r| r.known())
                    .filter_map(|g| g.origin.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            },
            Some(c) => {
                let tables = c.rules.iter().map(|r| ("[[allow]]", r));
                let tables = tables.chain(c.named.iter().map(|r| ("[[rule]]", r)));
                Config::Read {
                    path: c.path.clone(),
                    rules: c.rules.len() + c.named.len(),
                    unused: tables
                        .filter(|(_, r)| !used.contains(r.name()))
                        .map(|(table, r)| Unused {
                            name: r.name().to_string(),
                            table,
                            line: r.line(),
                            reason: r.reason().to_string(),
                        })
                        .collect(),
                }
            }
        };

        Summary {
            tests: runs.len(),
            clean: runs.len() - failed.len(),
            failed,
            known,
            by_component: count_unknown(runs, |g| format!("{} {}", g.kind.singular(), g.component)),
            by_frame: count_unknown(runs, frame_key),
            slowest,
            config,
        }
    }

    /// Unknown survivors in all.
    pub(crate) fn unknown(&self) -> usize {
        self.by_component.iter().map(|r| r.survivors).sum()
    }
}

/// Where unknown survivors came from in the user's code: the user's frame, else the spawn
/// location, else (threads, descriptors, children) what they are.
fn frame_key(g: &Group) -> String {
    if let Some(f) = &g.user_frame {
        return f.display();
    }
    if let Some(l) = &g.spawn_location {
        return format!("spawned at {l}");
    }
    match g.kind {
        Kind::Thread => g.description.clone(),
        k => format!("{} {}", k.singular(), g.description),
    }
}

fn count_unknown(runs: &[Run], key: impl Fn(&Group) -> String) -> Vec<Row> {
    let mut by: BTreeMap<String, (usize, BTreeSet<usize>)> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        for g in run.unknown() {
            let e = by.entry(key(g)).or_default();
            e.0 += g.count;
            e.1.insert(i);
        }
    }
    let mut rows: Vec<Row> = by
        .into_iter()
        .map(|(key, (survivors, tests))| Row {
            key,
            survivors,
            tests: tests.len(),
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse((r.survivors, r.tests)));
    rows
}
