//! Harness: run a scenario through the `Check` API and assert on its report.

use leakcheck::{Check, Report, Status, Survivor};
use leakcheck_tests::scenarios::{scenario, Expected, Scenario};

/// Runs `name`'s leaky or clean variant and returns the report.
pub fn run(name: &str, leaky: bool) -> Report {
    let s: &Scenario = scenario(name);
    let builder = (s.configure)(
        Check::builder().label(format!("{name}{}", if leaky { "" } else { " (clean)" })),
    );
    let check = (s.start)(builder);
    let leftovers = (s.body)(&check, leaky);
    let report = check.finish();
    drop(leftovers);
    report
}

fn matches(s: &Survivor, e: &Expected) -> bool {
    let status_ok = match (&s.status, e.known_as) {
        (Status::Unknown, None) => true,
        (Status::Known { rule, .. }, Some(want)) => rule == want,
        _ => false,
    };
    s.kind == e.kind
        && s.component == e.component
        && s.description.contains(e.description)
        && status_ok
}

/// Asserts that the leaky variant is detected and classified as the scenario expects: each
/// expectation matches at least one survivor (kind, component, description and status), and no
/// unknown survivor is left unmatched.
#[track_caller]
pub fn assert_detected(name: &str, report: &Report) {
    let s = scenario(name);
    let text = report.to_text();
    assert_eq!(
        report.is_clean(),
        s.leaky_passes,
        "verdict of `{name}`:\n{text}"
    );
    let mut unmatched: Vec<&Survivor> = report.survivors.iter().collect();
    for e in s.expected {
        let before = unmatched.len();
        unmatched.retain(|sv| !matches(sv, e));
        assert!(
            unmatched.len() < before,
            "`{name}`: expected {e:?} in the report:\n{text}"
        );
    }
    let extra: Vec<_> = unmatched
        .iter()
        .filter(|s| s.status == Status::Unknown)
        .collect();
    assert!(
        extra.is_empty(),
        "`{name}`: unexpected unknown survivors {extra:#?}\n{text}"
    );
    if !s.leaky_passes {
        assert!(
            text.starts_with("leakcheck: leaked"),
            "headline of `{name}`:\n{text}"
        );
        assert!(text.contains("hint: "), "hint of `{name}`:\n{text}");
    }
}

/// Asserts that the clean twin passes with no unknown survivor.
#[track_caller]
pub fn assert_clean(name: &str, report: &Report) {
    assert!(
        report.is_clean(),
        "clean twin of `{name}` failed:\n{}",
        report.to_text()
    );
    assert_eq!(report.unknown().count(), 0);
}
