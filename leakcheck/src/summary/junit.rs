//! The run as JUnit XML, for CI systems that show test results: one test case per report, a
//! failing one with its survivors (the headline as the message, the listing as the text).
//! Written by hand: a library linked into every test build does not pull in an XML writer for
//! one small file.

use std::fmt::Write;

use super::html::{esc, esc_attr};
use super::read::Run;
use super::text::{headline, listing};

pub(crate) fn xml(runs: &[Run]) -> String {
    let failures = runs.iter().filter(|r| !r.clean).count();
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\"",
        runs.len()
    );
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(x, "<testsuites name=\"leakcheck\" {counts}>");
    let _ = writeln!(x, "    <testsuite name=\"leakcheck\" {counts}>");
    for run in runs {
        // `krate::module::test`: the module is the class, as cargo's JUnit writers do.
        let name = run.name();
        let _ = match name.rsplit_once("::") {
            Some((class, test)) => write!(
                x,
                "        <testcase name=\"{}\" classname=\"{}\"",
                esc_attr(test),
                esc_attr(class)
            ),
            None => write!(x, "        <testcase name=\"{}\"", esc_attr(name)),
        };
        if run.clean {
            x.push_str("/>\n");
        } else {
            let _ = write!(
                x,
                ">\n            <failure message=\"{}\" type=\"leak\">{}</failure>\n        </testcase>\n",
                esc_attr(&headline(run)),
                esc(&listing(run))
            );
        }
    }
    x.push_str("    </testsuite>\n</testsuites>\n");
    x
}
