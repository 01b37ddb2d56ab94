//! The run as JUnit XML, for CI systems that show test results: one test case per report, a
//! failing one with its survivors (the headline as the message, the listing as the text).

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::read::Run;
use super::text::{headline, listing};

pub(crate) fn xml(runs: &[Run]) -> Result<String, quick_junit::SerializeError> {
    let mut suite = TestSuite::new("leakcheck");
    for run in runs {
        let status = if run.clean {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(headline(run))
                .set_type("leak")
                .set_description(listing(run));
            s
        };
        // `krate::module::test`: the module is the class, as cargo's JUnit writers do.
        let name = run.name();
        let case = match name.rsplit_once("::") {
            Some((class, test)) => {
                let mut c = TestCase::new(test, status);
                c.set_classname(class);
                c
            }
            None => TestCase::new(name, status),
        };
        suite.add_test_case(case);
    }
    let mut report = Report::new("leakcheck");
    report.add_test_suite(suite);
    report.to_string()
}
