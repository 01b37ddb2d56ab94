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
