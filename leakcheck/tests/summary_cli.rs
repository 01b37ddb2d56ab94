//! The `leakcheck summary` binary: exit status and messages (the summary itself is tested in
//! the library, on the same fixtures).

use std::process::{Command, Output};

fn summary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakcheck"))
        .arg("summary")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("LEAKCHECK_CONFIG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn prints_the_summary_of_a_run() {
    let o = summary(&[
        "../fixtures/leakcheck-reports/run",
        "--config",
        "../fixtures/leakcheck-reports/leakcheck.toml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("tests checked  13\nclean          6\nfailed         7\n"),
        "{out}"
    );
    assert!(out.contains("[[rule]]   nats-reconnecting"), "{out}");
}

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    for (args, says) in [
        (
            &["--frobnicate"][..],
            "error: invalid option '--frobnicate'",
        ),
        (
            &["--junit"][..],
            "error: missing argument for option '--junit'",
        ),
        (&["a", "b"][..], "is a second one"),
    ] {
        let o = summary(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("leakcheck summary --help"));
    }
    let o = summary(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("usage: leakcheck summary [DIR]"));
}

#[test]
fn unreadable_reports_exit_with_1_and_name_the_file() {
    let o = summary(&["../fixtures/leakcheck-reports/schema-v1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: failed to read report ../fixtures/leakcheck-reports/schema-v1/leak_test.corpus.known_singleton.clean.json: schema version 1, this leakcheck reads version 2; rerun the tests with this version\n"
    );
    let o = summary(&["no-such-dir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("read report directory no-such-dir: "),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("run the tests first"), "{}", stderr(&o));
}
