//! The summary as one self-contained HTML page: the same tables as the text, then each failing
//! test's listing and its lifecycle as a small inline SVG chart. Nothing is loaded from
//! anywhere (no script, no font, no image, no link out), so the page opens the same from a CI
//! artifact, offline, years later. It is well-formed XML too, which the tests check.

use std::fmt::Write;

use super::read::{LifecycleRow, Run};
use super::tables::{Config, Row, RuleRow, Summary, Unused, SLOWEST};
use super::text::{headline, listing};

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { text-align: left; padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.counts span { display: inline-block; margin-right: 1.5em; font-size: 1.1em; }
.bad { color: #b00020; } .ok { color: #1b5e20; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
section.failure { border-top: 2px solid #b00020; margin-top: 2em; }
svg text { font-family: system-ui, sans-serif; font-size: 10px; fill: #333; }
";

/// Line colors of the lifecycle charts.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// At most this many components are drawn per chart (the ones that changed most).
const CHART_ROWS: usize = 8;

/// `s` with `&`, `<`, `>`, `"` and `'` escaped: safe in text and in quoted attributes, of this
/// page and of the JUnit XML. Characters XML 1.0 forbids (control characters other than tab,
/// newline and carriage return, an ANSI escape in a thread name say, and U+FFFE, U+FFFF) become
/// U+FFFD.
pub(crate) fn esc(s: &str) -> String {
    escape(s, false)
}

/// [`esc`], and tab, newline and carriage return as character references: an XML attribute's
/// value as written (a parser normalizes a literal one to a space).
pub(crate) fn esc_attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' if attr => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || matches!(c, '\u{fffe}' | '\u{ffff}') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn page(s: &Summary) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    h.push_str("<title>leakcheck summary</title>\n<style>");
    h.push_str(STYLE);
    h.push_str("</style>\n</head>\n<body>\n<h1>leakcheck summary</h1>\n");
    let _ = writeln!(
        h,
        "<p class=\"counts\"><span>tests checked <b>{}</b></span><span class=\"ok\">clean <b>{}</b></span><span class=\"{}\">failed <b>{}</b></span></p>",
        s.tests,
        s.clean,
        if s.failed.is_empty() { "ok" } else { "bad" },
        s.failed.len()
    );
    if !s.failed.is_empty() {
        h.push_str("<ul>\n");
        for (i, run) in s.failed.iter().enumerate() {
            let _ = writeln!(
                h,
                "<li><a href=\"#failure-{i}\">{}</a>: {}</li>",
                esc(run.name()),
                esc(&headline(run))
            );
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Known survivors by rule</h2>\n<p>The allowances that carry the suite.</p>\n");
    if s.known.is_empty() {
        h.push_str("<p>None: no rule allowed a survivor.</p>\n");
    } else {
        let rows = s.known.iter().map(RuleRow::cells);
        table(&mut h, &RuleRow::HEADERS, 2, rows);
    }

    let _ = writeln!(
        h,
        "<h2>Unknown survivors by component</h2>\n<p>{} in all.</p>",
        s.unknown()
    );
    if !s.by_component.is_empty() {
        let rows = s.by_component.iter().map(Row::cells);
        table(&mut h, &["survivors", "tests", "component"], 2, rows);
        h.push_str("<h2>Unknown survivors by where they were spawned</h2>\n");
        let rows = s.by_frame.iter().map(Row::cells);
        table(&mut h, &["survivors", "tests", "spawned in"], 2, rows);
    }

    let _ = writeln!(h, "<h2>Slowest settles (top {SLOWEST})</h2>");
    let rows = s.slowest.iter().map(|r| {
        vec![
            format!("{:.1}", r.settle.elapsed_ms),
            r.settle.rounds.to_string(),
            if r.settle.timed_out {
                "deadline passed".into()
            } else {
                String::new()
            },
            r.name().to_string(),
        ]
    });
    table(&mut h, &["ms", "rounds", "", "test"], 2, rows);

    h.push_str("<h2>Rules configured</h2>\n");
    match &s.config {
        Config::NotFound { origins } => {
            h.push_str(
                "<p>No leakcheck.toml found (pass <code>--config</code> to list the unused rules).</p>\n",
            );
            if !origins.is_empty() {
                let o: Vec<String> = origins.iter().map(|o| esc(o)).collect();
                let _ = writeln!(h, "<p>The reports name rules of: {}</p>", o.join(", "));
            }
        }
        Config::Read {
            path,
            rules,
            unused,
        } => {
            let _ = writeln!(
                h,
                "<p>{} configures {rules} rule(s); {} used by some report.</p>",
                esc(&path.display().to_string()),
                rules - unused.len()
            );
            if !unused.is_empty() {
                h.push_str("<p class=\"bad\">Candidates for removal: no report used them, and a stale allowance hides the next real leak.</p>\n");
                let rows = unused.iter().map(Unused::cells);
                table(&mut h, &Unused::HEADERS, 0, rows);
            }
        }
    }

    if !s.failed.is_empty() {
        h.push_str("<h2>Failing tests</h2>\n");
    }
    for (i, run) in s.failed.iter().enumerate() {
        let _ = writeln!(
            h,
            "<section class=\"failure\" id=\"failure-{i}\">\n<h3>{}</h3>\n<pre>{}</pre>",
            esc(run.name()),
            esc(&listing(run))
        );
        chart(&mut h, run);
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn table(h: &mut String, head: &[&str], numeric: usize, rows: impl Iterator<Item = Vec<String>>) {
    h.push_str("<table>\n<tr>");
    for (i, c) in head.iter().enumerate() {
        let class = if i < numeric { " class=\"n\"" } else { "" };
        let _ = write!(h, "<th{class}>{}</th>", esc(c));
    }
    h.push_str("</tr>\n");
    for row in rows {
        h.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let class = if i < numeric { " class=\"n\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", esc(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// The lifecycle: one line per component whose count changed, over the checkpoints.
fn chart(h: &mut String, run: &Run) {
    let cols = &run.lifecycle.columns;
    let mut rows: Vec<&LifecycleRow> = run
        .lifecycle
        .rows
        .iter()
        .filter(|r| r.counts.len() == cols.len() && r.counts.windows(2).any(|w| w[0] != w[1]))
        .collect();
    if cols.len() < 2 || rows.is_empty() {
        h.push_str("<p>Lifecycle: no component's count changed.</p>\n");
        return;
    }
    let spread = |r: &LifecycleRow| {
        let (lo, hi) = (r.counts.iter().min(), r.counts.iter().max());
        hi.unwrap_or(&0) - lo.unwrap_or(&0)
    };
    rows.sort_by_key(|r| std::cmp::Reverse(spread(r)));
    let hidden = rows.len().saturating_sub(CHART_ROWS);
    rows.truncate(CHART_ROWS);
    rows.sort_by(|a, b| (a.kind, &a.component).cmp(&(b.kind, &b.component)));

    let max = rows
        .iter()
        .flat_map(|r| r.counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, top, plot_w, plot_h, legend_w) = (
        36.0,
        10.0,
        (120.0 * (cols.len() - 1) as f64).max(240.0),
        120.0,
        240.0,
    );
    let (width, height) = (left + plot_w + 30.0 + legend_w, top + plot_h + 30.0);
    let x = |i: usize| left + plot_w * i as f64 / (cols.len() - 1) as f64;
    let y = |n: usize| top + plot_h - plot_h * n as f64 / max as f64;

    let _ = writeln!(
        h,
        "<p>Lifecycle: live count per component at each checkpoint.</p>\n<svg width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"lifecycle of {}\">",
        esc(run.name())
    );
    // Axes, with the scale's ends and the checkpoint names.
    let _ = writeln!(
        h,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#999\"/><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>",
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        h,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">0</text>",
        left - 4.0,
        top + 8.0,
        left - 4.0,
        top + plot_h
    );
    for (i, c) in cols.iter().enumerate() {
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            top + plot_h + 16.0,
            esc(c)
        );
    }
    for (k, row) in rows.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let name = format!("{} {}", row.kind.singular(), row.component);
        let points: Vec<String> = row
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{:.1},{:.1}", x(i), y(*n)))
            .collect();
        let _ = writeln!(
            h,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        for (i, n) in row.counts.iter().enumerate() {
            let _ = writeln!(
                h,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{}: {n} at {}</title></circle>",
                x(i),
                y(*n),
                esc(&name),
                esc(&cols[i])
            );
        }
        let ly = top + 6.0 + 14.0 * k as f64;
        let lx = left + plot_w + 30.0;
        let _ = writeln!(
            h,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            ly - 8.0,
            lx + 14.0,
            ly,
            esc(&name)
        );
    }
    h.push_str("</svg>\n");
    if hidden > 0 {
        let _ = writeln!(
            h,
            "<p>And {hidden} more component(s) that changed less.</p>"
        );
    }
}
