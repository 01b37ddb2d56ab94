//! `leakcheck summary [DIR] [--html FILE] [--junit FILE] [--config FILE]`: a run's JSON
//! reports at a glance. The arguments are parsed here; the summary is the library's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use leakcheck::__summary::{default_dir, run, Options};

const HELP: &str = "\
leakcheck summary: a test run's leak reports at a glance

usage: leakcheck summary [DIR] [--html FILE] [--junit FILE] [--config FILE]

Reads the JSON report each leak test wrote and prints: the tests checked, clean and failed;
the known survivors per rule; the unknown survivors per component and per spawning frame;
the slowest settles; and the rules of leakcheck.toml no report used (candidates for removal).

arguments:
  DIR             the report directory (default: $CARGO_TARGET_DIR/leakcheck if set,
                  else target/leakcheck)
  --html FILE     also write one self-contained HTML page (no script, nothing loaded)
  --junit FILE    also write JUnit XML, one test case per report
  --config FILE   the leakcheck.toml whose rules are checked for use (default:
                  $LEAKCHECK_CONFIG, else the nearest leakcheck.toml upward from here)
  -h, --help      print this help

exit status: 0 when the summary was made (whether or not tests leaked), 1 when the reports
cannot be read, 2 on bad arguments.
";

fn main() -> ExitCode {
    let opts = match parse(std::env::args_os().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\nusage: leakcheck summary [DIR] [--html FILE] [--junit FILE] [--config FILE]\nrun `leakcheck summary --help` for more");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(text) => {
            print!("{text}");
            for (what, path) in [("html page", &opts.html), ("junit xml", &opts.junit)] {
                if let Some(p) = path {
                    println!("\nwrote the {what} to {}", p.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: failed to {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options, or `None` for `--help`.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut opts = Options::default();
    let mut command = false;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("html") => opts.html = Some(p.value()?.into()),
            Long("junit") => opts.junit = Some(p.value()?.into()),
            Long("config") => opts.config = Some(p.value()?.into()),
            Value(v) if !command => {
                if v != "summary" {
                    return Err(format!(
                        "unknown command {:?}: the only command is `summary`",
                        v.to_string_lossy()
                    )
                    .into());
                }
                command = true;
            }
            Value(v) if opts.dir.is_none() => opts.dir = Some(PathBuf::from(v)),
            Value(v) => {
                return Err(format!(
                    "one report directory only, and {:?} is a second one",
                    v.to_string_lossy()
                )
                .into())
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if !command {
        return Err("missing the command: `leakcheck summary [DIR]`".into());
    }
    opts.dir.get_or_insert_with(default_dir);
    Ok(Some(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Option<Options>, String> {
        parse(a.iter().map(OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_directory_and_the_outputs() {
        let o = args(&["summary", "reports", "--html", "a.html", "--junit=j.xml"])
            .unwrap()
            .unwrap();
        assert_eq!(o.dir, Some(PathBuf::from("reports")));
        assert_eq!(o.html, Some(PathBuf::from("a.html")));
        assert_eq!(o.junit, Some(PathBuf::from("j.xml")));
        assert_eq!(o.config, None);
        assert!(args(&["summary", "--help"]).unwrap().is_none());
        assert_eq!(
            args(&["summary"]).unwrap().unwrap().dir,
            Some(default_dir())
        );
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        for (a, says) in [
            (&["summary", "--nope"][..], "invalid option '--nope'"),
            (
                &["summary", "--html"][..],
                "missing argument for option '--html'",
            ),
            (&["summary", "a", "b"][..], "\"b\" is a second one"),
            (&["report"][..], "unknown command \"report\""),
            (&[][..], "missing the command"),
        ] {
            let e = args(a).unwrap_err();
            assert!(e.contains(says), "{a:?}: {e}");
        }
    }
}
