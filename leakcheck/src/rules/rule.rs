use regex::Regex;

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
}

/// Builds a [`Rule`]; regexes are checked in [`RuleBuilder::build`].
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    name: String,
    reason: String,
    kind: Option<Kind>,
    patterns: Vec<(Field, String)>,
    origin: Option<String>,
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
                    "`{key}` is not a rule key: write `key=regex` with a key among {}",
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

    /// Checks the rule: a reason is required, at least one matcher, and valid regexes.
    pub fn build(self) -> Result<Rule, Error> {
        let err = |reason: String| Error::Rule {
            rule: self.name.clone(),
            origin: self.origin.clone(),
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
        let mut matchers = Vec::with_capacity(self.patterns.len());
        for (field, pattern) in &self.patterns {
            let re = Regex::new(pattern).map_err(|e| {
                err(format!(
                    "`{}` = {pattern:?} is not a valid regex: {e}",
                    field.key()
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
