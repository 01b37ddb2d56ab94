//! The summary as text for a terminal, and the compact listing of one failing test that the
//! HTML page and the JUnit failures carry (a report's JSON has no text, so it is rebuilt from
//! the groups).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::read::Run;
use super::tables::{Config, Row, RuleRow, Summary, Unused, SLOWEST};
use crate::report::Kind;

pub(crate) fn render(s: &Summary, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "leakcheck summary of {}\n", dir.display());
    let _ = writeln!(out, "tests checked  {}", s.tests);
    let _ = writeln!(out, "clean          {}", s.clean);
    let _ = writeln!(out, "failed         {}", s.failed.len());
    for run in &s.failed {
        let _ = writeln!(out, "  {}: {}", run.name(), headline(run));
    }

    out.push_str("\nknown survivors by rule (the allowances that carry the suite)\n");
    if s.known.is_empty() {
        out.push_str("  none: no rule allowed a survivor\n");
    } else {
        let rows = s.known.iter().map(RuleRow::cells);
        table(&mut out, &RuleRow::HEADERS, 2, rows);
    }

    let _ = writeln!(
        out,
        "\nunknown survivors by component ({} in all)",
        s.unknown()
    );
    if s.by_component.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows = s.by_component.iter().map(Row::cells);
        table(&mut out, &["survivors", "tests", "component"], 2, rows);
        out.push_str("\nunknown survivors by where they were spawned (the user's frame)\n");
        let rows = s.by_frame.iter().map(Row::cells);
        table(&mut out, &["survivors", "tests", "spawned in"], 2, rows);
    }

    let _ = writeln!(out, "\nslowest settles (top {SLOWEST})");
    let rows = s.slowest.iter().map(|r| {
        let mut test = r.name().to_string();
        if r.settle.timed_out {
            test.push_str(" (deadline passed)");
        }
        vec![
            format!("{:.1}", r.settle.elapsed_ms),
            r.settle.rounds.to_string(),
            test,
        ]
    });
    table(&mut out, &["ms", "rounds", "test"], 2, rows);

    out.push('\n');
    match &s.config {
        Config::NotFound { origins } => {
            out.push_str(
                "rules: no leakcheck.toml found (searched LEAKCHECK_CONFIG, then upward from the current directory); pass --config to list the unused ones\n",
            );
            if !origins.is_empty() {
                let _ = writeln!(out, "  the reports name rules of: {}", origins.join(", "));
            }
        }
        Config::Read {
            path,
            rules,
            unused,
        } => {
            let _ = write!(
                out,
                "rules configured in {}: {rules}, used by some report: {}",
                path.display(),
                rules - unused.len()
            );
            if unused.is_empty() {
                out.push('\n');
            } else {
                out.push_str(
                    "\ncandidates for removal (no report used them; a stale allowance hides the next real leak):\n",
                );
                let rows = unused.iter().map(Unused::cells);
                table(&mut out, &Unused::HEADERS, 0, rows);
            }
        }
    }
    out
}

/// Columns padded to their widest cell; the first `numeric` columns are right-aligned, the
/// last column is not padded.
fn table(out: &mut String, head: &[&str], numeric: usize, rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(head.iter().map(|h| h.to_string()).collect()).chain(rows) {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            line.push(' ');
            if i + 1 == row.len() {
                line.push_str(cell);
            } else if i < numeric {
                let _ = write!(line, "{cell:>w$} ");
            } else {
                let _ = write!(line, "{cell:<w$} ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `leaked 3 tasks, 1 thread (and 1 known survivor)`, or `clean`.
pub(crate) fn headline(run: &Run) -> String {
    let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for g in run.unknown() {
        *per_kind.entry(g.kind).or_default() += g.count;
    }
    let known: usize = run.known().map(|g| g.count).sum();
    let mut h = if per_kind.is_empty() {
        // A failing report has unknown survivors; say so if one lacks them.
        if run.clean { "clean" } else { "failed" }.to_string()
    } else {
        let kinds: Vec<String> = per_kind
            .iter()
            .map(|(k, n)| format!("{n} {}", if *n == 1 { k.singular() } else { k.plural() }))
            .collect();
        format!("leaked {}", kinds.join(", "))
    };
    if known > 0 {
        let and = if per_kind.is_empty() { "" } else { "and " };
        let s = if known == 1 { "" } else { "s" };
        let _ = write!(h, " ({and}{known} known survivor{s})");
    }
    h
}

/// One test's survivors, a group a paragraph, unknown first: what the test's own text report
/// says of them, without the lifecycle table and the hint.
pub(crate) fn listing(run: &Run) -> String {
    let mut out = format!("leakcheck: {} in `{}`\n", headline(run), run.name());
    for g in run.unknown().chain(run.known()) {
        let what = match (&g.kind, &g.spawn_location) {
            (Kind::Task, Some(l)) => format!("spawned at {l}"),
            _ => g.description.clone(),
        };
        let status = if g.rule().is_some() {
            "KNOWN"
        } else {
            "UNKNOWN"
        };
        let _ = writeln!(
            out,
            "\n{status} {} ×{} · {} · {what}",
            g.kind.singular(),
            g.count,
            g.component
        );
        if let Some(rule) = g.rule() {
            let from = g
                .origin
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default();
            let reason = g.reason.as_deref().unwrap_or("");
            let _ = writeln!(out, "    allowed by  rule `{rule}`{from}: {reason}");
        }
        if g.kind == Kind::Task && !g.names.is_empty() {
            let _ = writeln!(out, "    name        {}", g.names.join(", "));
        }
        if let Some(f) = &g.user_frame {
            let _ = writeln!(out, "    spawned in  {}", f.display());
        }
        if let Some(v) = &g.via {
            let _ = writeln!(out, "    via         {}", v.display());
        }
        for leaf in g.await_trace.iter().flat_map(|t| &t.leaves) {
            let at = leaf.frames.first().map(|f| f.display());
            match (&leaf.resource, at) {
                (Some(r), Some(at)) => {
                    let _ = writeln!(out, "    waiting on  {r} in {at}");
                }
                (Some(r), None) => {
                    let _ = writeln!(out, "    waiting on  {r}");
                }
                (None, Some(at)) => {
                    let _ = writeln!(out, "    waiting in  {at}");
                }
                (None, None) => {}
            }
        }
        let more = g.count.saturating_sub(g.ids.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let id_name = match g.kind {
            Kind::Task => "task id",
            Kind::Thread => "tid",
            Kind::Fd => "fd",
            Kind::Child => "pid",
        };
        let _ = writeln!(out, "    {id_name:<11} {}{more}", g.ids.join(", "));
    }
    let _ = writeln!(out, "\n{}", run.settle.line());
    for n in &run.notes {
        let _ = writeln!(out, "note: {}", n.message);
    }
    out
}
