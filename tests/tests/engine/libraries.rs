//! What real libraries leave behind, checked as a user's test meets it.

use leakcheck::{Check, Kind, Kinds};

/// tonic's lazy channel keeps tower's buffer worker, which tonic spawns through hyper-util's
/// `TokioExecutor`: the task is filed under tonic (the crate this test called), its user frame is
/// this test's line, and the lifecycle table counts it under the same component.
#[test]
fn a_library_task_spawned_through_another_crate_s_executor_is_filed_under_the_crate_called() {
    let check = Check::builder()
        .label("a gRPC channel kept")
        .kinds(Kinds::parse("tasks").unwrap())
        .settle_deadline(std::time::Duration::from_millis(200))
        .start_multi_thread(2)
        .unwrap();
    let line = line!() + 3;
    let channel = check.block_on(async {
        // Nothing listens there: a lazy channel connects on its first call only.
        tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy()
    });
    let r = check.finish();
    drop(channel);
    let s = r
        .unknown()
        .find(|s| s.kind == Kind::Task)
        .unwrap_or_else(|| panic!("the channel's worker: {}", r.to_text()));
    assert!(
        s.spawn_location
            .as_deref()
            .is_some_and(|l| l.contains("hyper-util")),
        "{}",
        r.to_text()
    );
    assert_eq!(s.component, "tonic", "{}", r.to_text());
    let via = s.via.as_ref().expect("the library function called");
    assert!(via.function.starts_with("tonic::transport::"), "{via:?}");
    let user = s.user_frame.as_ref().expect("this test's line");
    assert_eq!(
        user.file.as_deref(),
        Some("tests/tests/engine/libraries.rs")
    );
    assert_eq!(user.line, Some(line));
    let text = r.to_text();
    assert!(text.contains("component = '^tonic$'"), "{text}");
    assert!(
        r.lifecycle
            .rows
            .iter()
            .any(|row| row.kind == Kind::Task && row.component == "tonic"),
        "{text}"
    );
}

/// A child started through tokio's `process::Command` and left running: it names this test's
/// line (std spawns it through leakcheck's `posix_spawnp` hook; tokio's and std's frames are
/// the runtime's, left out).
#[test]
fn a_child_started_through_tokio_names_the_line_that_called_it() {
    let check = Check::builder()
        .label("a tokio child kept")
        .kinds(Kinds::parse("children").unwrap())
        .settle_deadline(std::time::Duration::from_millis(100))
        .start_current_thread()
        .unwrap();
    let child = check.block_on(async {
        let mut sleep = tokio::process::Command::new("sleep");
        sleep.arg("30").spawn().unwrap()
    });
    let r = check.finish();
    let pid = child.id().expect("running") as i32;
    // SAFETY: signals and reaps this test's own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    drop(child);
    let text = r.to_text();
    let s = r
        .unknown()
        .find(|s| s.kind == Kind::Child)
        .unwrap_or_else(|| panic!("the child: {text}"));
    assert_eq!(s.component, "sleep", "{text}");
    let user = s.user_frame.as_ref().expect("this test's line");
    assert_eq!(
        user.file.as_deref(),
        Some("tests/tests/engine/libraries.rs"),
        "{text}"
    );
    assert!(
        user.function
            .contains("a_child_started_through_tokio_names_the_line_that_called_it"),
        "{text}"
    );
    assert!(
        s.backtrace
            .iter()
            .all(|f| !f.function.starts_with("tokio::") && !f.function.starts_with("std::")),
        "{:#?}",
        s.backtrace
    );
}
