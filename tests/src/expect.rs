//! What a scenario's report must show, asserted the same way whichever runner produced it (the
//! `Check` API or `#[leak_test]`).

use leakcheck::{Report, Status, Survivor};

use crate::scenarios::{scenario, Expected};

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
    for fragment in s.notes {
        assert!(
            report.notes.iter().any(|n| n.message.contains(fragment)),
            "`{name}`: expected a note with {fragment:?}:\n{text}"
        );
    }
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
