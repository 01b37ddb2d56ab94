//! Harness: run a scenario through the `Check` API.

use leakcheck::{Check, Report};
use leakcheck_tests::scenarios::{scenario, Scenario};

/// Runs `name`'s leaky or clean variant and returns the report.
pub fn run(name: &str, leaky: bool) -> Report {
    let s: &Scenario = scenario(name);
    let builder = (s.configure)(
        Check::builder().label(format!("{name}{}", if leaky { "" } else { " (clean)" })),
    );
    let check = (s.start)(builder);
    let leftovers = s.body.run(&check, leaky);
    let report = check.finish();
    drop(leftovers);
    report
}
