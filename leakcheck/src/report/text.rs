//! Human text and its normalized form for snapshots: one renderer, two styles.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::group::groups;
use super::normalized::{count_bucket, delta_bucket, normalize};
use super::{Kind, Report, Status, Survivor};
use crate::tasks::Frame;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Human,
    Normalized,
}

impl Report {
    /// The report for a person: headline, survivors grouped by spawn site, the lifecycle table,
    /// settling, notes and one hint.
    pub fn to_text(&self) -> String {
        render(self, Style::Human)
    }

    /// The report without ids, addresses, absolute paths, line numbers and timings, with the
    /// lifecycle's counts as changes since the baseline (`0`, `+1`, `+n`, `-1`, `-n`): stable
    /// input for `insta` snapshots whatever ran before in the process.
    pub fn to_normalized(&self) -> String {
        render(self, Style::Normalized)
    }
}

fn render(r: &Report, style: Style) -> String {
    let norm = |t: &str| match style {
        Style::Human => t.to_string(),
        Style::Normalized => normalize(t),
    };
    let mut out = String::new();
    let unknown: Vec<_> = r.unknown().collect();
    let known = r.known().count();
    let label = r
        .label
        .as_deref()
        .map(|l| format!(" in `{l}`"))
        .unwrap_or_default();

    // Headline.
    if unknown.is_empty() {
        let _ = write!(out, "leakcheck: clean{label}");
        if known > 0 {
            let _ = write!(
                out,
                " ({} known survivor{})",
                num(known, style),
                plural(known)
            );
        }
    } else {
        let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
        for s in &unknown {
            *per_kind.entry(s.kind).or_default() += 1;
        }
        let kinds: Vec<_> = per_kind
            .iter()
            .map(|(k, n)| {
                format!(
                    "{} {}",
                    num(*n, style),
                    if *n == 1 { k.singular() } else { k.plural() }
                )
            })
            .collect();
        let _ = write!(out, "leakcheck: leaked {}{label}", kinds.join(", "));
        if known > 0 {
            let _ = write!(
                out,
                " (and {} known survivor{})",
                num(known, style),
                plural(known)
            );
        }
    }
    out.push('\n');

    // Survivors, grouped.
    for g in groups(&r.survivors) {
        out.push('\n');
        render_group(&mut out, r, &g, style, &norm);
    }

    // Lingered: how long things took to exit varies from run to run, so snapshots leave it out.
    if !r.lingered.is_empty() && style == Style::Human {
        out.push('\n');
        let mut by: BTreeMap<(Kind, String, String), (usize, f64)> = BTreeMap::new();
        for l in &r.lingered {
            let e = by
                .entry((l.kind, l.component.clone(), norm(&l.description)))
                .or_default();
            e.0 += 1;
            e.1 = e.1.max(l.exited_after_ms);
        }
        out.push_str("lingered after the body, then exited (not leaks):\n");
        for ((kind, component, desc), (n, ms)) in by {
            let _ = write!(out, "  {} · {component} · {desc}", kind.singular());
            if style == Style::Human {
                let _ = write!(out, " ×{n}, gone after {ms:.1} ms");
            }
            out.push('\n');
        }
    }

    // Lifecycle table.
    if r.lifecycle.columns.len() > 2 || !r.lifecycle.rows.is_empty() {
        out.push('\n');
        render_lifecycle(&mut out, r, style);
    }

    // Settling.
    if style == Style::Human {
        let _ = writeln!(out, "\n{}", r.settle.line());
        let s = &r.settle;
        for (n, what) in [
            (
                s.waiting_threads,
                "thread(s) waiting to start their own leak check",
            ),
            (
                s.test_threads,
                "thread(s) of other tests running in parallel",
            ),
            (
                s.test_fds,
                "file descriptor(s) opened by other tests running in parallel",
            ),
            (
                s.test_children,
                "child process(es) started by other tests running in parallel",
            ),
        ] {
            if n > 0 {
                let _ = writeln!(out, "not counted: {n} {what}");
            }
        }
    }

    // Notes.
    if !r.notes.is_empty() {
        out.push('\n');
        for n in &r.notes {
            let _ = writeln!(out, "note: {}", norm(&n.message));
        }
    }

    // One hint.
    if let Some(first) = unknown.first() {
        out.push('\n');
        out.push_str(&hint(first, style));
    }
    out
}

/// Renders survivors that share kind, status, component and site.
fn render_group(
    out: &mut String,
    r: &Report,
    members: &[&Survivor],
    style: Style,
    norm: &dyn Fn(&str) -> String,
) {
    let s = members[0];
    let n = members.len();
    let status = match &s.status {
        Status::Unknown => "UNKNOWN".to_string(),
        Status::Known { .. } => "KNOWN".to_string(),
    };
    let what = match s.kind {
        Kind::Task => s
            .spawn_location
            .as_deref()
            .map(|l| format!("spawned at {}", norm(l)))
            .unwrap_or_else(|| norm(&s.description)),
        _ => norm(&s.description),
    };
    let count = match style {
        Style::Human => format!(" ×{n}"),
        Style::Normalized => String::new(),
    };
    let _ = writeln!(
        out,
        "{status} {}{count} · {} · {what}",
        s.kind.singular(),
        s.component
    );
    if let Status::Known {
        rule,
        reason,
        origin,
    } = &s.status
    {
        let from = origin
            .as_deref()
            .map(|o| format!(" ({})", norm(o)))
            .unwrap_or_default();
        let _ = writeln!(out, "    allowed by  rule `{rule}`{from}: {reason}");
    }
    if s.kind == Kind::Task {
        let mut names: Vec<&str> = members.iter().filter_map(|m| m.name.as_deref()).collect();
        names.sort_unstable();
        names.dedup();
        if !names.is_empty() {
            let _ = writeln!(out, "    name        {}", norm(&names.join(", ")));
        }
    }
    if let Some(f) = &s.user_frame {
        let label = match s.kind {
            Kind::Thread => "started in ",
            Kind::Fd => "opened in  ",
            Kind::Child => "started in ",
            _ => "spawned in ",
        };
        let _ = writeln!(out, "    {label} {}", norm(&f.display()));
    }
    if let Some(v) = &s.via {
        let _ = writeln!(out, "    via         {}", norm(&called(v)));
    }
    if let Some(t) = &s.await_trace {
        if t.leaves.is_empty() {
            let _ = writeln!(out, "    waiting on  nothing tokio tracks: `pending()`, or a waker kept outside tokio (a channel fed by a thread, a callback)");
        }
        for leaf in &t.leaves {
            let at = leaf.frames.first().map(|f| norm(&f.display()));
            match (&leaf.resource, at) {
                (Some(r), Some(at)) => {
                    let _ = writeln!(out, "    waiting on  {} in {at}", norm(r));
                }
                (Some(r), None) => {
                    let _ = writeln!(out, "    waiting on  {}", norm(r));
                }
                (None, Some(at)) => {
                    let _ = writeln!(out, "    waiting in  {at}");
                }
                (None, None) => {}
            }
        }
    }
    if s.parent.is_some() {
        let mut chains: Vec<String> = members
            .iter()
            .filter_map(|m| m.parent.as_deref())
            .map(|p| parent_chain(r, p, style, norm))
            .collect();
        chains.sort();
        chains.dedup();
        for c in chains {
            let _ = writeln!(out, "    spawned by  {c}");
        }
    }
    if style == Style::Human {
        let mut ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        ids.sort_by_key(|id| (id.len(), *id));
        ids.truncate(8);
        let more = if n > 8 {
            format!(" and {} more", n - 8)
        } else {
            String::new()
        };
        let age = members
            .iter()
            .filter_map(|m| m.age_ms)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let id_name = match s.kind {
            Kind::Task => "task id",
            Kind::Thread => "tid",
            Kind::Fd => "fd",
            Kind::Child => "pid",
        };
        let _ = write!(out, "    {id_name:<11} {}{more}", ids.join(", "));
        if let Some(a) = age {
            let _ = write!(out, "; alive {a:.1} ms");
        }
        out.push('\n');
    }
}

/// `task 7 (spawned at a.rs:3:5) <- task 3 (spawned at b.rs:9:1)`: the task that spawned
/// another, and the one that spawned it, while they are survivors of the report.
fn parent_chain(r: &Report, first: &str, style: Style, norm: &dyn Fn(&str) -> String) -> String {
    let mut links = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(id) = next.take() {
        if links.len() == 8 {
            links.push("...".to_string());
            break;
        }
        let found = r
            .survivors
            .iter()
            .find(|s| s.kind == Kind::Task && s.id == id);
        let name = match style {
            Style::Human => format!("task {id}"),
            Style::Normalized => "a task".to_string(),
        };
        match found {
            Some(p) => {
                let site = p.spawn_location.as_deref().map(norm).unwrap_or_default();
                links.push(format!("{name} (a survivor, spawned at {site})"));
                next = p.parent.clone();
            }
            None => links.push(format!("{name} (exited already)")),
        }
    }
    links.join(" <- ")
}

fn render_lifecycle(out: &mut String, r: &Report, style: Style) {
    let cols = &r.lifecycle.columns;
    let head_w = r
        .lifecycle
        .rows
        .iter()
        .filter(|row| shown(row, style))
        .map(|row| row.kind.singular().len() + 1 + row.component.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let cell = |row: &super::LifecycleRow, i: usize| -> String {
        let n = row.counts[i];
        match style {
            Style::Human => match i.checked_sub(1).map(|p| row.counts[p]) {
                Some(p) if p != n => format!("{n} ({:+})", n as i64 - p as i64),
                _ => n.to_string(),
            },
            // Change since the baseline: what existed before varies with the runner.
            Style::Normalized => delta_bucket(n as i64 - row.counts[0] as i64).to_string(),
        }
    };
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            r.lifecycle
                .rows
                .iter()
                .filter(|row| shown(row, style))
                .map(|row| cell(row, i).len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let _ = write!(out, "{:<head_w$}", "lifecycle");
    for (c, w) in cols.iter().zip(&widths) {
        let _ = write!(out, "  {c:>w$}");
    }
    out.push('\n');
    let mut unchanged = 0;
    for row in &r.lifecycle.rows {
        if !shown(row, style) {
            unchanged += 1;
            continue;
        }
        let head = format!("{} {}", row.kind.singular(), row.component);
        let _ = write!(out, "{head:<head_w$}");
        for (i, w) in widths.iter().enumerate() {
            let c = cell(row, i);
            let _ = write!(out, "  {c:>w$}");
        }
        out.push('\n');
    }
    if unchanged > 0 && style == Style::Human {
        let _ = writeln!(
            out,
            "({} component{} unchanged)",
            num(unchanged, style),
            plural(unchanged)
        );
    }
}

/// Rows whose count changed during the check; in snapshots only rows that rose above the
/// baseline (what existed before and ended meanwhile, such as another test's thread, varies
/// with the runner).
fn shown(row: &super::LifecycleRow, style: Style) -> bool {
    let changed = row.counts.windows(2).any(|w| w[0] != w[1]);
    match style {
        Style::Human => changed,
        Style::Normalized => row.counts.iter().any(|c| *c > row.counts[0]),
    }
}

fn hint(s: &Survivor, style: Style) -> String {
    let norm = |v: &str| match style {
        Style::Human => v.to_string(),
        Style::Normalized => normalize(v),
    };
    let component_rule = || ("component", format!("^{}$", regex::escape(&s.component)));
    let in_library = s
        .spawn_location
        .as_deref()
        .is_some_and(crate::component::is_library_path);
    let (fix, rule) = match s.kind {
        Kind::Task => match (&s.via, &s.user_frame) {
            (Some(via), user) => {
                let at = user
                    .as_ref()
                    .map(|u| format!("`{}`", norm(&u.display())))
                    .unwrap_or_else(|| "your code".into());
                (
                    format!(
                        "the `{}` task that `{}` started for {at} is still alive: drop or close what you created there (the client, pool or connection) before the check ends, or await its shutdown",
                        s.component,
                        norm(&called(via))
                    ),
                    Some(component_rule()),
                )
            }
            _ if in_library => (
                format!(
                    "a task of the `{}` library is still alive: drop or close the `{}` object that owns it (its client, pool or connection) before the check ends",
                    s.component, s.component
                ),
                Some(component_rule()),
            ),
            _ => match &s.spawn_location {
                Some(at) => (
                    "await its JoinHandle (or abort it) before the check ends, and drop what it waits on"
                        .to_string(),
                    Some(("spawn_location", regex::escape(&norm(&file_of(at))))),
                ),
                // Nothing tells this task from any other: a rule would allow them all.
                None => (
                    "await its JoinHandle (or abort it) before the check ends, and drop what it waits on. No rule can allow it as it is: without a spawn site it cannot be told from any other task; build with RUSTFLAGS=\"--cfg tokio_unstable\" to see where it was spawned".to_string(),
                    None,
                ),
            },
        },
        Kind::Thread | Kind::Fd if s.via.is_some() => {
            let via = s.via.as_ref().map(|v| norm(&called(v)));
            let at = s
                .user_frame
                .as_ref()
                .map(|u| format!("`{}`", norm(&u.display())))
                .unwrap_or_else(|| "your code".into());
            let (what, state) = if s.kind == Kind::Thread {
                ("thread", "running")
            } else {
                ("descriptor", "open")
            };
            (
                format!(
                    "the `{}` {what} that `{}` made for {at} is still {state}: drop or close what you created there (the client, pool or writer) before the check ends, or await its shutdown",
                    s.component,
                    via.unwrap_or_default()
                ),
                Some(component_rule()),
            )
        }
        Kind::Thread => {
            let name = s.name.clone().unwrap_or_default();
            let rule = if !name.is_empty() && crate::component::of_thread(&name) == name {
                ("thread_name", format!("^{}$", regex::escape(&norm(&name))))
            } else {
                // A family from the catalog (`rdkafka` for `rdk:*`): portable across names.
                component_rule()
            };
            let fix = match &s.user_frame {
                Some(u) => format!(
                    "join the thread started at `{}` (or stop what runs on it) before the check ends",
                    norm(&u.display())
                ),
                None => "join the thread (or drop the client that owns it) before the check ends".into(),
            };
            (fix, Some(rule))
        }
        Kind::Fd => match &s.user_frame {
            // The function that opened it: portable, unlike an address or a port.
            Some(u) => (
                format!(
                    "close the descriptor opened at `{}` (drop the socket, file or client) before the check ends",
                    norm(&u.display())
                ),
                Some(("any_frame", frame_pattern(u, norm))),
            ),
            None => (
                "close the descriptor (drop the socket, file or client) before the check ends"
                    .into(),
                Some(("fd_target", regex::escape(&norm(&s.description)))),
            ),
        },
        Kind::Child => (
            match &s.user_frame {
                Some(u) => format!(
                    "kill and wait for the child started at `{}` before the check ends",
                    norm(&u.display())
                ),
                None => "kill and wait for the child before the check ends".into(),
            },
            Some(("child_cmdline", regex::escape(&norm(&s.description)))),
        ),
    };
    let Some((key, pattern)) = rule else {
        return format!("hint: {fix}.\n");
    };
    format!(
        "hint: {fix}. If it is harmless, allow it in leakcheck.toml:\n  [[allow]]\n  name = \"...\"\n  reason = \"...\"\n  kind = \"{}\"\n  {key} = '{pattern}'\n",
        match s.kind {
            Kind::Task => "task",
            Kind::Thread => "thread",
            Kind::Fd => "fd",
            Kind::Child => "child",
        },
    )
}

/// Whether a frame's function is named without its path: with `debug = "line-tables-only"`
/// the debug info names inlined functions (`poll`, `{async_block#0}`) that way.
fn is_bare(f: &Frame) -> bool {
    !f.function.contains("::")
}

/// The function a frame called, as a person reads it: its path without closures, or, when the
/// debug info gave no path, the name with its place.
fn called(f: &Frame) -> String {
    if is_bare(f) {
        f.display()
    } else {
        strip_closures(&f.function).to_string()
    }
}

/// An `any_frame` pattern for `f` that matches it and not every function of that name: the
/// function's path, or a bare name with its file.
fn frame_pattern(f: &Frame, norm: impl Fn(&str) -> String) -> String {
    match (&f.file, is_bare(f)) {
        (Some(file), true) => format!(
            "^{} at {}:",
            regex::escape(&f.function),
            regex::escape(&norm(file))
        ),
        _ => format!("^{}", regex::escape(strip_closures(&f.function))),
    }
}

/// `a::f::{{closure}}::{{closure}}` → `a::f`: the function a person called.
fn strip_closures(f: &str) -> &str {
    let mut f = f;
    while let Some(rest) = f.strip_suffix("::{{closure}}") {
        f = rest;
    }
    f
}

/// `src/a.rs:10:5` → `src/a.rs`: a rule on the file survives edits above the line.
fn file_of(location: &str) -> String {
    let mut parts = location.rsplitn(3, ':');
    let (col, line, file) = (parts.next(), parts.next(), parts.next());
    match (col, line, file) {
        (Some(c), Some(l), Some(f)) if c.parse::<u32>().is_ok() && l.parse::<u32>().is_ok() => {
            f.to_string()
        }
        _ => location.to_string(),
    }
}

fn num(n: usize, style: Style) -> String {
    match style {
        Style::Human => n.to_string(),
        Style::Normalized => count_bucket(n).to_string(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survivor(kind: Kind) -> Survivor {
        Survivor::plain(
            kind,
            "1".into(),
            "app".into(),
            Status::Unknown,
            "something".into(),
            None,
        )
    }

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
        }
    }

    /// The `any_frame` pattern a hint suggests, compiled.
    fn suggested(hint: &str) -> regex::Regex {
        let pattern = hint
            .lines()
            .find_map(|l| l.trim().strip_prefix("any_frame = '"))
            .and_then(|p| p.strip_suffix('\''))
            .unwrap_or_else(|| panic!("no any_frame rule in {hint}"));
        regex::Regex::new(pattern).unwrap()
    }

    #[test]
    fn what_was_not_counted_is_said_per_kind_in_the_human_form_only() {
        let r = Report {
            schema_version: crate::SCHEMA_VERSION,
            label: None,
            clean: true,
            kinds: vec![Kind::Thread, Kind::Fd, Kind::Child],
            survivors: Vec::new(),
            lingered: Vec::new(),
            settle: crate::SettleStats {
                test_threads: 2,
                test_children: 3,
                ..Default::default()
            },
            lifecycle: Default::default(),
            notes: Vec::new(),
        };
        let text = r.to_text();
        assert!(
            text.contains("not counted: 2 thread(s) of other tests running in parallel\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "not counted: 3 child process(es) started by other tests running in parallel\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("waiting") && !text.contains("descriptor"),
            "{text}"
        );
        assert!(!r.to_normalized().contains("not counted"));
    }

    #[test]
    fn a_task_without_a_spawn_site_gets_no_rule_that_would_allow_every_task() {
        let hint = hint(&survivor(Kind::Task), Style::Human);
        assert!(!hint.contains("[[allow]]"), "{hint}");
        assert!(hint.contains("--cfg tokio_unstable"), "{hint}");
        let located = Survivor {
            spawn_location: Some("src/app.rs:3:5".into()),
            ..survivor(Kind::Task)
        };
        let hint = super::hint(&located, Style::Human);
        assert!(hint.contains("spawn_location = 'src/app\\.rs'"), "{hint}");
    }

    #[test]
    fn a_library_s_thread_is_running_and_its_descriptor_open() {
        let made = |kind| Survivor {
            component: "console-subscriber".into(),
            user_frame: Some(frame("app::main", "src/main.rs", 4)),
            via: Some(frame("console_subscriber::init", "lib.rs", 1)),
            ..survivor(kind)
        };
        let thread = hint(&made(Kind::Thread), Style::Human);
        assert!(
            thread.starts_with("hint: the `console-subscriber` thread that `console_subscriber::init` made for `app::main at src/main.rs:4` is still running:"),
            "{thread}"
        );
        assert!(
            thread.contains("component = '^console\\-subscriber$'"),
            "{thread}"
        );
        let fd = hint(&made(Kind::Fd), Style::Human);
        assert!(fd.contains("descriptor that `console_subscriber::init` made for `app::main at src/main.rs:4` is still open:"), "{fd}");
    }

    #[test]
    fn a_bare_frame_name_is_ruled_with_its_file_and_shown_with_its_place() {
        // `debug = "line-tables-only"` names inlined frames without their path.
        let bare = frame("{async_block#0}", "tests/leaks.rs", 16);
        let fd = Survivor {
            user_frame: Some(bare.clone()),
            ..survivor(Kind::Fd)
        };
        let rule = suggested(&hint(&fd, Style::Human));
        assert!(rule.is_match(&bare.display()), "{rule}");
        let elsewhere = frame("{async_block#0}", "src/other.rs", 16);
        assert!(!rule.is_match(&elsewhere.display()), "{rule}");

        let named = frame("app::open_log::{{closure}}", "src/log.rs", 9);
        let fd = Survivor {
            user_frame: Some(named.clone()),
            ..survivor(Kind::Fd)
        };
        let rule = suggested(&hint(&fd, Style::Human));
        assert_eq!(rule.as_str(), "^app::open_log");
        assert!(rule.is_match(&named.display()));

        let via = frame(
            "poll",
            "/root/.cargo/registry/src/index.crates.io-1/hyper-util-0.1.21/src/client/legacy/client.rs",
            300,
        );
        let task = Survivor {
            spawn_location: Some(
                "/root/.cargo/registry/src/x/hyper-util-0.1.21/src/rt/tokio.rs:127:9".into(),
            ),
            user_frame: Some(bare),
            via: Some(via),
            ..survivor(Kind::Task)
        };
        let hint = hint(&task, Style::Human);
        assert!(
            hint.contains("that `poll at /root/.cargo/registry/src/index.crates.io-1/hyper-util-0.1.21/src/client/legacy/client.rs:300` started"),
            "{hint}"
        );
        assert_eq!(
            called(&frame(
                "hyper_util::Client::request::{{closure}}",
                "x.rs",
                1
            )),
            "hyper_util::Client::request"
        );
    }
}
