use std::collections::HashMap;
use std::fmt;

use regex::Regex;

use crate::error::{excerpt, pointer};
use crate::report::Kind;
use crate::tasks::{AwaitTrace, Frame};
use crate::Error;

/// The fields a rule can match, each with a regex. Every field a rule names must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `file:line:column` of the spawn call (tasks).
    SpawnLocation,
    /// The first spawn backtrace frame outside the runtime, as `function at file:line`.
    TopFrame,
    /// Any spawn backtrace frame, as `function at file:line`.
    AnyFrame,
    /// Any frame of the await trace (tasks, after a dump).
    AwaitPoint,
    TaskName,
    ThreadName,
    /// The descriptor's description, for example `tcp 127.0.0.1:1 -> 127.0.0.1:9092 (ESTABLISHED)`
    /// or a file path.
    FdTarget,
    ChildCmdline,
    /// The component leakcheck derived (crate, thread family, descriptor type, program).
    Component,
}

impl Field {
    const ALL: [(Field, &'static str); 9] = [
        (Field::SpawnLocation, "spawn_location"),
        (Field::TopFrame, "top_frame"),
        (Field::AnyFrame, "any_frame"),
        (Field::AwaitPoint, "await_point"),
        (Field::TaskName, "task_name"),
        (Field::ThreadName, "thread_name"),
        (Field::FdTarget, "fd_target"),
        (Field::ChildCmdline, "child_cmdline"),
        (Field::Component, "component"),
    ];

    fn key(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, k)| *k)
            .unwrap_or("?")
    }

    /// The kinds of survivor that have this field: a rule restricted to another kind could never
    /// match it. Frames are kept for threads and descriptors too (creation backtraces).
    fn kinds(self) -> &'static [Kind] {
        match self {
            Field::SpawnLocation | Field::AwaitPoint | Field::TaskName => &[Kind::Task],
            Field::TopFrame | Field::AnyFrame => &[Kind::Task, Kind::Thread, Kind::Fd],
            Field::ThreadName => &[Kind::Thread],
            Field::FdTarget => &[Kind::Fd],
            Field::ChildCmdline => &[Kind::Child],
            Field::Component => &[Kind::Task, Kind::Thread, Kind::Fd, Kind::Child],
        }
    }
}

/// `kind = "..."` as written in `leakcheck.toml`.
fn kind_key(kind: Kind) -> &'static str {
    match kind {
        Kind::Task => "task",
        Kind::Thread => "thread",
        Kind::Fd => "fd",
        Kind::Child => "child",
    }
}

/// `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Where in its file a rule is defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Site {
    /// `allow` or `rule`.
    pub(crate) table: &'static str,
    /// Which entry of that table, from 1.
    pub(crate) index: usize,
    /// The line of its `name`, from 1.
    pub(crate) line: usize,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`[[{}]]` #{} at line {}",
            self.table, self.index, self.line
        )
    }
}

/// A rule that files matching survivors as known.
///
/// ```
/// use leakcheck::{Kind, Rule};
/// let rule = Rule::builder("metrics-ticker", "the metrics crate starts one global ticker")
///     .kind(Kind::Task)
///     .spawn_location(r"metrics-[0-9.]+/src/ticker\.rs")
///     .build()
///     .unwrap();
/// assert_eq!(rule.name(), "metrics-ticker");
/// ```
#[derive(Clone, Debug)]
pub struct Rule {
    name: String,
    reason: String,
    kind: Option<Kind>,
    matchers: Vec<(Field, Regex)>,
    origin: Option<String>,
    site: Option<Site>,
}

/// Builds a [`Rule`]; regexes are checked in [`RuleBuilder::build`].
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    name: String,
    reason: String,
    kind: Option<Kind>,
    patterns: Vec<(Field, String)>,
    origin: Option<String>,
    site: Option<Site>,
}

macro_rules! matcher_setters {
    ($($(#[$doc:meta])* $fn:ident => $field:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(mut self, regex: impl Into<String>) -> Self {
                self.patterns.push((Field::$field, regex.into()));
                self
            }
        )*
    };
}

impl RuleBuilder {
    /// Restricts the rule to one kind of resource.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = Some(kind);
        self
    }

    matcher_setters! {
        /// Matches a task's spawn location, `file:line:column`.
        spawn_location => SpawnLocation;
        /// Matches the first spawn backtrace frame outside the runtime (`function at file:line`).
        top_frame => TopFrame;
        /// Matches any spawn backtrace frame (`function at file:line`).
        any_frame => AnyFrame;
        /// Matches any frame of a task's await trace (needs a task dump).
        await_point => AwaitPoint;
        /// Matches a task's name.
        task_name => TaskName;
        /// Matches a thread's name.
        thread_name => ThreadName;
        /// Matches a descriptor's description (socket addresses, file path, `pipe:[..]`).
        fd_target => FdTarget;
        /// Matches a child process's command line.
        child_cmdline => ChildCmdline;
        /// Matches the component leakcheck derived for the survivor.
        component => Component;
    }

    /// Adds a matcher by its file key (`thread_name`, ...); `key` is one of `Field::ALL`.
    pub(crate) fn pattern(mut self, key: &str, regex: String) -> Self {
        if let Some((field, _)) = Field::ALL.iter().find(|(_, k)| *k == key) {
            self.patterns.push((*field, regex));
        }
        self
    }

    /// Adds a matcher written `key=regex` (`thread_name=^rdk:`); an unknown key is an error
    /// that lists the valid ones.
    pub(crate) fn pattern_spec(self, spec: &str) -> Result<Self, Error> {
        let (key, regex) = spec.split_once('=').unwrap_or((spec, ""));
        let key = key.trim();
        if !Field::ALL.iter().any(|(_, k)| *k == key) {
            return Err(Error::Rule {
                rule: spec.to_string(),
                origin: None,
                reason: format!(
                    "`{}` is not a rule key: write `key=regex` with a key among {}",
                    excerpt(key),
                    Field::ALL.map(|(_, k)| k).join(", ")
                ),
            });
        }
        Ok(self.pattern(key, regex.trim().to_string()))
    }

    pub(crate) fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Where in the file of [`origin`](Self::origin) the rule is.
    pub(crate) fn site(mut self, site: Site) -> Self {
        self.site = Some(site);
        self
    }

    /// Checks the rule: a reason is required, at least one matcher, keys that its kind (if it
    /// has one) can match, and valid regexes.
    pub fn build(self) -> Result<Rule, Error> {
        let err = |reason: String| Error::Rule {
            rule: self.name.clone(),
            origin: match (&self.origin, &self.site) {
                (Some(o), Some(site)) => Some(format!("{o}, {site}")),
                (o, _) => o.clone(),
            },
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(err("the name is empty".into()));
        }
        if self.reason.trim().is_empty() {
            return Err(err(
                "`reason` is empty: say why this survivor is harmless".into()
            ));
        }
        if self.patterns.is_empty() {
            return Err(err(format!(
                "it matches nothing: give at least one of {}",
                Field::ALL.map(|(_, k)| k).join(", ")
            )));
        }
        if let Some(kind) = self.kind {
            if let Some((field, _)) = self
                .patterns
                .iter()
                .find(|(f, _)| !f.kinds().contains(&kind))
            {
                let of_kind: Vec<&str> = Field::ALL
                    .iter()
                    .filter(|(f, _)| f.kinds().contains(&kind))
                    .map(|(_, k)| *k)
                    .collect();
                let has_it: Vec<&str> = field.kinds().iter().map(|k| k.plural()).collect();
                return Err(err(format!(
                    "`{}` can never match: the rule is of kind `{}`, and only {} have a `{}`; a `{}` rule can match {}, or leave out `kind` to match every kind",
                    field.key(),
                    kind_key(kind),
                    and_list(&has_it),
                    field.key(),
                    kind_key(kind),
                    of_kind.join(", "),
                )));
            }
        }
        let mut matchers = Vec::with_capacity(self.patterns.len());
        for (field, pattern) in &self.patterns {
            let re = Regex::new(pattern).map_err(|e| {
                err(format!(
                    "`{}` = {:?} is not a valid regex: {}",
                    field.key(),
                    excerpt(pattern),
                    regex_error(pattern, &e)
                ))
            })?;
            matchers.push((*field, re));
        }
        Ok(Rule {
            name: self.name,
            reason: self.reason,
            kind: self.kind,
            matchers,
            origin: self.origin,
            site: self.site,
        })
    }
}

impl Rule {
    /// Starts a rule; `reason` is shown next to every survivor it files as known.
    pub fn builder(name: impl Into<String>, reason: impl Into<String>) -> RuleBuilder {
        RuleBuilder {
            name: name.into(),
            reason: reason.into(),
            kind: None,
            patterns: Vec::new(),
            origin: None,
            site: None,
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why survivors that match are harmless.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Where the rule was defined (a file), if not in code.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The line of the rule's `name` in its file, if from a file.
    pub(crate) fn line(&self) -> Option<usize> {
        self.site.as_ref().map(|s| s.line)
    }

    /// Whether `self` and `other` are one definition (a file's rule and its copy that a test
    /// allowed by name).
    fn same_definition(&self, other: &Rule) -> bool {
        self.site.is_some() && self.site == other.site && self.origin == other.origin
    }

    /// Where the rule comes from, for messages: `` `[[allow]]` #2 at line 7 of leakcheck.toml ``
    /// or `a rule added in code (reason "...")`.
    fn source(&self) -> String {
        match (&self.origin, &self.site) {
            (Some(origin), Some(site)) => {
                format!("{site} of {}", crate::error::excerpt_ends(origin))
            }
            (Some(origin), None) => format!("a rule of {}", crate::error::excerpt_ends(origin)),
            (None, _) => format!("a rule added in code (reason {:?})", excerpt(&self.reason)),
        }
    }

    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        if self.kind.is_some_and(|k| k != s.kind) {
            return false;
        }
        self.matchers.iter().all(|(field, re)| {
            let one = |v: Option<&str>| v.is_some_and(|v| re.is_match(v));
            match field {
                Field::SpawnLocation => one(s.spawn_location),
                Field::TopFrame => one(s
                    .frames
                    .iter()
                    .find(|f| !f.is_runtime())
                    .map(|f| f.display())
                    .as_deref()),
                Field::AnyFrame => s.frames.iter().any(|f| re.is_match(&f.display())),
                Field::AwaitPoint => s.await_trace.is_some_and(|t| {
                    t.leaves.iter().any(|l| {
                        l.resource.as_deref().is_some_and(|r| re.is_match(r))
                            || l.frames.iter().any(|f| re.is_match(&f.display()))
                            || l.runtime_frames.iter().any(|f| re.is_match(f))
                    })
                }),
                Field::TaskName => one(s.task_name),
                Field::ThreadName => one(s.thread_name),
                Field::FdTarget => one(s.fd_target),
                Field::ChildCmdline => one(s.child_cmdline),
                Field::Component => one(Some(s.component)),
            }
        })
    }
}

/// What a regex error says, bounded: the regex crate's message quotes the whole pattern, so a
/// long pattern gets the error's kind and a pointer to its place instead.
fn regex_error(pattern: &str, e: &regex::Error) -> String {
    if pattern.chars().count() <= crate::error::EXCERPT_CHARS && !pattern.contains('\n') {
        return e.to_string();
    }
    let (what, span) = match regex_syntax::Parser::new().parse(pattern) {
        Err(regex_syntax::Error::Parse(e)) => (e.kind().to_string(), *e.span()),
        Err(regex_syntax::Error::Translate(e)) => (e.kind().to_string(), *e.span()),
        // Not a syntax error (a size limit): the message does not quote the pattern.
        _ => return excerpt(&e.to_string()).to_string(),
    };
    let p = pointer(
        pattern,
        span.start.offset,
        span.end.offset - span.start.offset,
    );
    format!(
        "{what} at line {}, column {}\n{}",
        p.line, p.column, p.drawing
    )
}

/// Checks that no two rules share a name: a report names the rule that allowed a survivor, and
/// `allow = ["name"]` picks a `[[rule]]` by its name. A file's rule and its copy allowed by name
/// are one rule.
pub(crate) fn unique_names<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Result<(), Error> {
    let mut seen: HashMap<&str, &Rule> = HashMap::new();
    for rule in rules {
        match seen.get(rule.name()) {
            Some(first) if !first.same_definition(rule) => {
                return Err(Error::Rule {
                    rule: rule.name.clone(),
                    origin: None,
                    reason: format!(
                        "two rules have this name, {} and {}; give each rule a name of its own: a report names the rule that allowed a survivor, and `allow = [\"name\"]` picks a `[[rule]]` by its name",
                        first.source(),
                        rule.source()
                    ),
                });
            }
            Some(_) => {}
            None => {
                seen.insert(rule.name(), rule);
            }
        }
    }
    Ok(())
}

/// What a rule sees of one survivor.
#[derive(Default)]
pub(crate) struct Subject<'a> {
    pub(crate) kind: Kind,
    pub(crate) component: &'a str,
    pub(crate) spawn_location: Option<&'a str>,
    pub(crate) frames: &'a [Frame],
    pub(crate) await_trace: Option<&'a AwaitTrace>,
    pub(crate) task_name: Option<&'a str>,
    pub(crate) thread_name: Option<&'a str>,
    pub(crate) fd_target: Option<&'a str>,
    pub(crate) child_cmdline: Option<&'a str>,
}

/// An ordered collection of rules. Sets add up: extending never drops a rule already present.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. A narrower scope adds its rules in front, so its reason is the one shown
    /// when both match; the wider rule stays in the set.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Adds every rule of `other` after the rules already here.
    pub fn extend(&mut self, other: RuleSet) {
        self.rules.extend(other.rules);
    }

    /// The rules, in matching order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// How many rules the set holds.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set holds no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule called `name`.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Whether a rule of the set matches await traces (settling then dumps unknown tasks).
    pub(crate) fn uses_await_point(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.matchers.iter().any(|(f, _)| *f == Field::AwaitPoint))
    }

    pub(crate) fn first_match(&self, s: &Subject<'_>) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_regex_names_the_rule_the_key_and_the_value() {
        let e = Rule::builder("r1", "why")
            .thread_name("rdk:(")
            .build()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`r1`"), "{msg}");
        assert!(msg.contains("thread_name"), "{msg}");
        assert!(msg.contains("rdk:("), "{msg}");
    }

    #[test]
    fn a_rule_needs_a_reason_and_a_matcher() {
        let e = Rule::builder("r", " ")
            .thread_name("x")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("reason"), "{e}");
        let e = Rule::builder("r", "why").build().unwrap_err();
        assert!(e.to_string().contains("spawn_location, top_frame"), "{e}");
    }

    #[test]
    fn a_key_that_the_kind_never_has_is_an_error_that_says_why() {
        let never = [
            (Kind::Task, "thread_name"),
            (Kind::Task, "fd_target"),
            (Kind::Task, "child_cmdline"),
            (Kind::Thread, "spawn_location"),
            (Kind::Thread, "await_point"),
            (Kind::Thread, "task_name"),
            (Kind::Thread, "fd_target"),
            (Kind::Thread, "child_cmdline"),
            (Kind::Fd, "spawn_location"),
            (Kind::Fd, "thread_name"),
            (Kind::Fd, "child_cmdline"),
            (Kind::Child, "top_frame"),
            (Kind::Child, "any_frame"),
            (Kind::Child, "task_name"),
            (Kind::Child, "fd_target"),
        ];
        for (kind, key) in never {
            let e = Rule::builder("r", "why")
                .kind(kind)
                .pattern(key, "x".into())
                .build()
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "build rule `r`: `{key}` can never match: the rule is of kind `{}`",
                    kind_key(kind)
                )),
                "{e}"
            );
        }
        let e = Rule::builder("r", "why")
            .kind(Kind::Child)
            .component("x")
            .top_frame("y")
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only tasks, threads and file descriptors have a `top_frame`; a `child` rule can match child_cmdline, component, or leave out `kind`"),
            "{e}"
        );
        let valid: [(Kind, &[&str]); 4] = [
            (
                Kind::Task,
                &[
                    "spawn_location",
                    "top_frame",
                    "any_frame",
                    "await_point",
                    "task_name",
                    "component",
                ],
            ),
            (
                Kind::Thread,
                &["thread_name", "component", "top_frame", "any_frame"],
            ),
            (
                Kind::Fd,
                &["fd_target", "component", "top_frame", "any_frame"],
            ),
            (Kind::Child, &["child_cmdline", "component"]),
        ];
        for (kind, keys) in valid {
            let mut b = Rule::builder("r", "why").kind(kind);
            for key in keys {
                b = b.pattern(key, "x".into());
            }
            b.build().unwrap();
        }
        // Without a kind, any keys.
        let mut b = Rule::builder("r", "why");
        for (_, key) in Field::ALL {
            b = b.pattern(key, "x".into());
        }
        b.build().unwrap();
    }

    #[test]
    fn a_long_regex_or_name_is_quoted_as_an_excerpt_with_the_place() {
        // 1 MB: parsing 10 MB of regex takes a while.
        let long = format!("{}(", "a".repeat(1_000_000));
        let e = Rule::builder("r", "why")
            .thread_name(long.as_str())
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1024, "{} bytes", e.len());
        assert!(
            e.contains("`thread_name` = \"aaaa") && e.contains("\"… (1000001 bytes in all)"),
            "{e}"
        );
        assert!(
            e.contains("unclosed group at line 1, column 1000001"),
            "{e}"
        );
        assert!(e.contains("| …aaaa") && e.ends_with('^'), "{e}");
        // Too big to compile, with no syntax error: the message does not quote the pattern.
        let big = "\\w{1000}".repeat(1000);
        let e = Rule::builder("r", "why")
            .thread_name(big.as_str())
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1024, "{e}");
        let e = Rule::builder("n".repeat(10_000_000), "why")
            .pattern_spec(&format!("{}=x", "k".repeat(10_000_000)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1024, "{} bytes", e.len());
    }

    #[test]
    fn names_are_unique_and_a_copy_is_the_same_rule() {
        let site = |index| Site {
            table: "rule",
            index,
            line: index * 5,
        };
        let file = |name: &str, index| {
            Rule::builder(name, "f")
                .origin("leakcheck.toml")
                .site(site(index))
                .thread_name("x")
                .build()
                .unwrap()
        };
        let a = file("a", 1);
        unique_names([&a, &a.clone(), &file("b", 2)]).unwrap();
        let e = unique_names([&a, &file("a", 2)]).unwrap_err().to_string();
        assert!(
            e.contains("`[[rule]]` #1 at line 5 of leakcheck.toml and `[[rule]]` #2 at line 10 of leakcheck.toml"),
            "{e}"
        );
        let code = Rule::builder("a", "c").thread_name("x").build().unwrap();
        let e = unique_names([&code, &code.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a rule added in code (reason \"c\") and a rule added in code"),
            "{e}"
        );
    }

    #[test]
    fn every_named_field_must_match_and_kind_restricts() {
        let r = Rule::builder("r", "why")
            .kind(Kind::Thread)
            .thread_name("^rdk:")
            .component("rdkafka")
            .build()
            .unwrap();
        let mut s = Subject {
            kind: Kind::Thread,
            component: "rdkafka",
            thread_name: Some("rdk:main"),
            ..Default::default()
        };
        assert!(r.matches(&s));
        s.component = "other";
        assert!(!r.matches(&s));
        s.component = "rdkafka";
        s.kind = Kind::Task;
        assert!(!r.matches(&s));
    }

    #[test]
    fn sets_add_up_and_the_first_match_wins() {
        let mut narrow = RuleSet::new();
        narrow.push(
            Rule::builder("narrow", "test")
                .thread_name("^x")
                .build()
                .unwrap(),
        );
        let mut wide = RuleSet::new();
        wide.push(
            Rule::builder("wide", "workspace")
                .thread_name(".")
                .build()
                .unwrap(),
        );
        wide.push(
            Rule::builder("other", "workspace")
                .thread_name("^y")
                .build()
                .unwrap(),
        );
        narrow.extend(wide);
        assert_eq!(narrow.len(), 3);
        let s = |n| Subject {
            kind: Kind::Thread,
            thread_name: Some(n),
            ..Default::default()
        };
        assert_eq!(narrow.first_match(&s("x1")).unwrap().name(), "narrow");
        assert_eq!(narrow.first_match(&s("z")).unwrap().name(), "wide");
    }
}
