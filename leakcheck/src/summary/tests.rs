//! The summary of real reports (`fixtures/leakcheck-reports/run`: 13 reports of the test crate,
//! 6 clean and 7 failing, written with the rules of `fixtures/leakcheck-reports/leakcheck.toml`).
//! Paths are relative: cargo runs a crate's tests from the crate's directory.

use std::path::{Path, PathBuf};

use super::read::{read_dir, Run};
use super::tables::{Config, Summary};
use super::*;

const RUN: &str = "../fixtures/leakcheck-reports/run";
const CONFIG: &str = "../fixtures/leakcheck-reports/leakcheck.toml";
const V1: &str = "../fixtures/leakcheck-reports/schema-v1";

fn runs() -> Vec<Run> {
    read_dir(Path::new(RUN)).unwrap()
}

fn config() -> FileConfig {
    FileConfig::read(Path::new(CONFIG)).unwrap()
}

/// A fresh directory under the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("leakcheck-summary-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn counts_tests_rules_components_and_frames() {
    let runs = runs();
    let c = config();
    let s = Summary::new(&runs, Some(&c));
    assert_eq!((s.tests, s.clean, s.failed.len()), (13, 6, 7));
    let known: Vec<_> = s
        .known
        .iter()
        .map(|r| (r.rule, r.survivors, r.tests))
        .collect();
    assert_eq!(known, [("metrics-ticker", 3, 3), ("config-watcher", 1, 1)]);
    assert_eq!(s.unknown(), 16);
    let components: Vec<_> = s
        .by_component
        .iter()
        .map(|r| (r.key.as_str(), r.survivors, r.tests))
        .collect();
    assert_eq!(
        components,
        [
            ("task leakcheck-tests::scenarios", 7, 2),
            ("task eventbus::delivery", 5, 1),
            ("child process sleep", 1, 1),
            ("file descriptor file", 1, 1),
            ("task leakcheck-tests::leak_test", 1, 1),
            ("thread orphan-worker", 1, 1),
        ]
    );
    // The user's frame, else the spawn location (a task spawned by the test itself), else what
    // the survivor is.
    let frames: Vec<_> = s.by_frame.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        frames[0],
        "leakcheck_tests::scenarios::executor_lib::execute at tests/src/scenarios.rs:600"
    );
    assert_eq!(s.by_frame[0].survivors, 5);
    assert!(frames.contains(&"spawned at tests/tests/leak_test/options.rs:60:5"));
    assert!(frames.contains(&"thread `orphan-worker`"));
    assert_eq!(s.by_frame.iter().map(|r| r.survivors).sum::<usize>(), 16);
}

#[test]
fn the_slowest_settles_come_first_and_stop_at_ten() {
    let runs = runs();
    let s = Summary::new(&runs, None);
    assert_eq!(s.slowest.len(), 10);
    assert_eq!(
        s.slowest[0].name(),
        "leak_test::corpus::task_spawned_by_leaked_task::leaky_body"
    );
    assert_eq!(s.slowest[0].settle.elapsed_ms, 1384.312);
    assert!(s
        .slowest
        .windows(2)
        .all(|w| w[0].settle.elapsed_ms >= w[1].settle.elapsed_ms));
    // The fastest three (the event bus's clean tests and the option test) are left out.
    assert!(!s
        .slowest
        .iter()
        .any(|r| r.name() == "eventbus::memory::lifecycle"));
}

#[test]
fn configured_rules_no_report_used_are_candidates_for_removal() {
    let runs = runs();
    let c = config();
    let s = Summary::new(&runs, Some(&c));
    let Config::Read { rules, unused, .. } = &s.config else {
        panic!("the configuration was given");
    };
    assert_eq!(*rules, 4);
    let unused: Vec<_> = unused
        .iter()
        .map(|u| (u.table, u.name.as_str(), u.line))
        .collect();
    assert_eq!(
        unused,
        [
            ("[[allow]]", "kafka-client-threads", Some(5)),
            ("[[rule]]", "nats-reconnecting", Some(17)),
        ]
    );
    let text = text::render(&s, Path::new(RUN));
    assert!(text.contains("candidates for removal"), "{text}");
    let text = text::render(&Summary::new(&runs, None), Path::new(RUN));
    assert!(text.contains("rules: no leakcheck.toml found"), "{text}");
    assert!(
        text.ends_with("\n  the reports name rules of: tests/leakcheck.toml\n"),
        "{text}"
    );
}

#[test]
fn the_text_summary_of_the_fixtures() {
    let runs = runs();
    let c = config();
    let text = text::render(&Summary::new(&runs, Some(&c)), Path::new(RUN));
    insta::assert_snapshot!(text);
}

#[test]
fn a_report_of_another_schema_version_is_refused_by_name() {
    let e = read_dir(Path::new(V1)).unwrap_err().to_string();
    assert_eq!(
        e,
        "read report ../fixtures/leakcheck-reports/schema-v1/leak_test.corpus.known_singleton.clean.json: schema version 1, this leakcheck reads version 2; rerun the tests with this version"
    );
    let d = TempDir::new("noversion");
    std::fs::write(d.0.join("x.json"), "{\"clean\": true}").unwrap();
    let e = read_dir(&d.0).unwrap_err().to_string();
    assert!(e.ends_with("x.json: no schema version, this leakcheck reads version 2; rerun the tests with this version"), "{e}");
}

#[test]
fn malformed_json_names_the_file_and_the_place() {
    let d = TempDir::new("malformed");
    std::fs::copy(
        Path::new(RUN).join("eventbus.memory.ordering.json"),
        d.0.join("a.json"),
    )
    .unwrap();
    std::fs::write(d.0.join("b.json"), "{\"schema_version\": 2, \"clean\": tru").unwrap();
    let e = read_dir(&d.0).unwrap_err().to_string();
    let b = d.0.join("b.json");
    assert!(
        e.starts_with(&format!(
            "read report {}: not a leakcheck JSON report: EOF while parsing a value at line 1 column 34",
            b.display()
        )),
        "{e}"
    );
    // Valid JSON that is not a report.
    std::fs::write(d.0.join("b.json"), "{\"schema_version\": 2}").unwrap();
    let e = read_dir(&d.0).unwrap_err().to_string();
    assert!(
        e.contains("b.json: not a leakcheck JSON report: missing field"),
        "{e}"
    );
}

#[test]
fn a_missing_or_empty_directory_says_to_run_the_tests_first() {
    let d = TempDir::new("empty");
    let e = read_dir(&d.0.join("nope")).unwrap_err().to_string();
    assert!(e.starts_with("read report directory "), "{e}");
    assert!(
        e.ends_with("run the tests first (each leak test writes its report there)"),
        "{e}"
    );
    // A report being written is not a report yet.
    std::fs::write(d.0.join("a.json.123.tmp"), "{").unwrap();
    let e = read_dir(&d.0).unwrap_err().to_string();
    assert!(
        e.contains("it holds no JSON report; run the tests first"),
        "{e}"
    );
}

#[test]
fn the_html_page_is_self_contained_well_formed_and_complete() {
    let runs = runs();
    let c = config();
    let page = html::page(&Summary::new(&runs, Some(&c)));
    for external in [
        "http://", "https://", "src=", "url(", "<script", "<link", "@import",
    ] {
        assert!(!page.contains(external), "the page holds {external}");
    }
    let elements = parse_xml(&page);
    assert_eq!(
        count(&elements, "section"),
        7,
        "one section per failing test"
    );
    assert_eq!(
        count(&elements, "svg"),
        7,
        "a lifecycle chart per failing test"
    );
    // Header row plus one row per rule, component, frame, settle and unused rule.
    assert_eq!(
        count(&elements, "tr"),
        (1 + 2) + (1 + 6) + (1 + 9) + (1 + 10) + (1 + 2)
    );
    assert!(page.contains("<td>metrics-ticker</td>"));
    assert!(page.contains("<td>nats-reconnecting</td>"));
    // The listing of a failing test, and its chart's line of the component that leaked.
    assert!(page.contains("UNKNOWN thread ×1 · orphan-worker · thread `orphan-worker`"));
    assert!(page.contains("<title>file descriptor file: 3 at final</title>"));
}

/// The report of `leak_test::options::leaks_one_task` (failing) written to `d` with `label` as
/// its label and `<i>comp</i>` as its component.
fn hostile_report(d: &TempDir, label: &str) -> Vec<Run> {
    let text =
        std::fs::read_to_string(Path::new(RUN).join("leak_test.options.leaks_one_task.json"))
            .unwrap()
            .replace("leak_test::options::leaks_one_task", label)
            .replace("leakcheck-tests::leak_test", "<i>comp</i>");
    std::fs::write(d.0.join("x.json"), text).unwrap();
    read_dir(&d.0).unwrap()
}

#[test]
fn the_html_page_escapes_what_reports_say() {
    let d = TempDir::new("escape");
    let runs = hostile_report(&d, "a<b>&\\\"c'</pre><script>");
    let page = html::page(&Summary::new(&runs, None));
    assert!(page.contains("a&lt;b&gt;&amp;&quot;c&#39;&lt;/pre&gt;&lt;script&gt;"));
    assert!(page.contains("&lt;i&gt;comp&lt;/i&gt;"));
    assert!(!page.contains("<script") && !page.contains("<i>"));
    parse_xml(&page);
}

/// An element of an XML document: its name, its attributes' values and its own text, entities
/// resolved.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Whether XML 1.0 allows `c` (a parser need not check it).
fn xml_char(c: char) -> bool {
    !((c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') || matches!(c, '\u{fffe}' | '\u{ffff}'))
}

/// Parses `doc` as XML (the HTML page and the JUnit file are written to be well-formed),
/// panicking where it is not, and returns its elements in document order.
fn parse_xml(doc: &str) -> Vec<Element> {
    use quick_xml::events::Event;
    if let Some(c) = doc.chars().find(|c| !xml_char(*c)) {
        panic!("{c:?} is not allowed in XML 1.0");
    }
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed at {}: {e}", reader.error_position()));
        let text = match event {
            Event::Eof => {
                assert!(open.is_empty(), "unclosed elements");
                return elements;
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.expect("a well-formed attribute");
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("only XML's entities")
                        .into_owned();
                    assert!(value.chars().all(xml_char), "{value:?}");
                    attrs.push((String::from_utf8(a.key.as_ref().to_vec()).unwrap(), value));
                }
                if matches!(event, Event::Start(_)) {
                    open.push(elements.len());
                }
                elements.push(Element {
                    name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                    attrs,
                    text: String::new(),
                });
                continue;
            }
            Event::End(_) => {
                open.pop();
                continue;
            }
            Event::Text(t) => t.xml10_content().expect("text").into_owned(),
            Event::GeneralRef(r) => match r.resolve_char_ref().expect("a character reference") {
                Some(c) => {
                    assert!(xml_char(c), "{c:?} is not allowed in XML 1.0");
                    c.to_string()
                }
                None => {
                    let name = r.decode().unwrap();
                    quick_xml::escape::resolve_xml_entity(&name)
                        .unwrap_or_else(|| panic!("&{name}; is not one of XML's entities"))
                        .to_string()
                }
            },
            _ => continue,
        };
        if let Some(&i) = open.last() {
            elements[i].text.push_str(&text);
        }
    }
}

fn count(elements: &[Element], name: &str) -> usize {
    elements.iter().filter(|e| e.name == name).count()
}

/// The test case named `name` and its failure, if any.
fn case<'a>(elements: &'a [Element], name: &str) -> (&'a Element, Option<&'a Element>) {
    let i = elements
        .iter()
        .position(|e| e.name == "testcase" && e.attr("name") == Some(name))
        .unwrap_or_else(|| panic!("no test case {name}"));
    let failure = elements.get(i + 1).filter(|e| e.name == "failure");
    (&elements[i], failure)
}

#[test]
fn the_junit_xml_has_one_case_per_report_and_the_failures() {
    let xml = junit::xml(&runs());
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    let elements = parse_xml(&xml);
    let names: Vec<&str> = elements.iter().take(2).map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["testsuites", "testsuite"]);
    for e in &elements[..2] {
        assert_eq!(
            (e.attr("tests"), e.attr("failures"), e.attr("errors")),
            (Some("13"), Some("7"), Some("0")),
            "{e:?}"
        );
    }
    assert_eq!(elements[1].attr("name"), Some("leakcheck"));
    assert_eq!(count(&elements, "testsuite"), 1);
    assert_eq!(count(&elements, "testcase"), 13);
    assert_eq!(count(&elements, "failure"), 7);

    let (failing, failure) = case(&elements, "forgets_to_close");
    assert_eq!(failing.attr("classname"), Some("eventbus::memory"));
    let failure = failure.expect("a failure");
    assert_eq!(failure.attr("message"), Some("leaked 5 tasks"));
    assert_eq!(failure.attr("type"), Some("leak"));
    let d = &failure.text;
    assert!(
        d.starts_with("leakcheck: leaked 5 tasks in `eventbus::memory::forgets_to_close`\n"),
        "{d}"
    );
    assert!(d.contains("UNKNOWN task ×2 · eventbus::delivery · spawned at eventbus/src/delivery/pool.rs:156:44"), "{d}");

    let (clean, failure) = case(&elements, "clean");
    assert_eq!(
        clean.attr("classname"),
        Some("leak_test::corpus::known_singleton")
    );
    assert!(failure.is_none(), "{failure:?}");
}

#[test]
fn the_junit_xml_escapes_what_reports_say() {
    let d = TempDir::new("junit-escape");
    // In the JSON: a quote, an ANSI escape (not allowed in XML 1.0) and a tab.
    let runs = hostile_report(&d, "a<b>&\\\"c'::t\\u001b[31m\\tz</testcase><x>");
    let xml = junit::xml(&runs);
    assert!(!xml.contains("<x>") && !xml.contains("<i>") && !xml.contains('\u{1b}'));
    let elements = parse_xml(&xml);
    assert_eq!(count(&elements, "testcase"), 1);
    let (case, failure) = case(&elements, "t\u{fffd}[31m\tz</testcase><x>");
    assert_eq!(case.attr("classname"), Some("a<b>&\"c'"));
    let failure = failure.expect("a failure");
    assert_eq!(failure.attr("message"), Some("leaked 1 task"));
    let d = &failure.text;
    assert!(
        d.starts_with("leakcheck: leaked 1 task in `a<b>&\"c'::t\u{fffd}[31m\tz</testcase><x>`\n"),
        "{d}"
    );
    assert!(d.contains("<i>comp</i>"), "{d}");
}

#[test]
fn run_writes_the_files_asked_for() {
    let d = TempDir::new("run");
    let opts = Options {
        dir: Some(RUN.into()),
        html: Some(d.0.join("s.html")),
        junit: Some(d.0.join("s.xml")),
        config: Some(CONFIG.into()),
    };
    let text = run(&opts).unwrap();
    assert!(text.starts_with("leakcheck summary of ../fixtures/leakcheck-reports/run\n"));
    assert!(std::fs::read_to_string(d.0.join("s.html"))
        .unwrap()
        .contains("<h1>leakcheck summary</h1>"));
    assert!(std::fs::read_to_string(d.0.join("s.xml"))
        .unwrap()
        .contains("failures=\"7\""));
    let opts = Options {
        html: Some(d.0.join("no-such-dir/s.html")),
        ..opts
    };
    let e = run(&opts).unwrap_err().to_string();
    assert!(
        e.starts_with("write html page ") && e.contains("no-such-dir/s.html: "),
        "{e}"
    );
    let opts = Options {
        html: None,
        config: Some(d.0.join("none.toml")),
        ..opts
    };
    let e = run(&opts).unwrap_err().to_string();
    assert!(e.starts_with("read rules file "), "{e}");
}

#[test]
fn the_default_directory_follows_cargo_target_dir() {
    assert_eq!(default_dir_from(None), Path::new("target/leakcheck"));
    assert_eq!(
        default_dir_from(Some("".into())),
        Path::new("target/leakcheck")
    );
    assert_eq!(
        default_dir_from(Some("/t".into())),
        Path::new("/t/leakcheck")
    );
}
