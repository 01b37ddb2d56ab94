//! Details of reports beyond detection: await traces, parents, lingering, checkpoints, rules
//! files, degraded dumps, and the JSON and normalized forms.

use std::time::Duration;

use leakcheck::{Check, Kind, Kinds, Status};

use crate::support::run;

#[test]
fn a_blocked_task_shows_the_resource_and_the_await_point() {
    let r = run("channel_sender_kept_alive", true);
    let s = r.unknown().next().expect("one unknown task");
    let trace = s.await_trace.as_ref().expect("an await trace");
    let leaf = &trace.leaves[0];
    assert!(
        leaf.resource.as_deref().unwrap_or("").contains("mpsc"),
        "{leaf:?}"
    );
    let at = trace.await_point().expect("an await point in user code");
    assert!(at.function.contains("channel_blocked"), "{at:?}");
    assert_eq!(at.file.as_deref(), Some("tests/src/scenarios.rs"));
    assert!(
        r.to_text().contains("waiting on  tokio::sync::mpsc"),
        "{}",
        r.to_text()
    );
    let user = s
        .user_frame
        .as_ref()
        .expect("a user frame from the spawn backtrace");
    assert!(
        user.function.contains("scenarios::channel_blocked"),
        "{user:?}"
    );
}

#[test]
fn a_task_spawned_by_a_leaked_task_names_its_parent() {
    let r = run("task_spawned_by_leaked_task", true);
    let tasks: Vec<_> = r.unknown().filter(|s| s.kind == Kind::Task).collect();
    assert_eq!(tasks.len(), 2, "{}", r.to_text());
    let parent = tasks
        .iter()
        .find(|s| s.parent.is_none())
        .expect("the parent");
    let child = tasks
        .iter()
        .find(|s| s.parent.is_some())
        .expect("the child");
    assert_eq!(child.parent.as_deref(), Some(parent.id.as_str()));
    // The chain names the parent with its spawn site.
    let text = r.to_text();
    assert!(
        text.contains(&format!(
            "spawned by  task {} (a survivor, spawned at tests/src/scenarios.rs:",
            parent.id
        )),
        "{text}"
    );
}

#[test]
fn a_lingering_task_passes_and_is_listed_with_its_exit_time() {
    let r = run("task_lingers_50ms", true);
    assert!(r.is_clean(), "{}", r.to_text());
    let l = r
        .lingered
        .iter()
        .find(|l| l.kind == Kind::Task)
        .expect("the lingering task");
    assert_eq!(l.component, "leakcheck-tests::scenarios");
    assert!(
        l.exited_after_ms >= 30.0 && l.exited_after_ms < 1000.0,
        "{l:?}"
    );
    assert!(r.to_text().contains("lingered after the body, then exited"));
}

#[test]
fn checkpoints_build_the_lifecycle_table() {
    let check = Check::builder()
        .label("lifecycle")
        .start_multi_thread(2)
        .unwrap();
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let mut rx = tx.subscribe();
            check.handle().spawn(async move {
                let _ = rx.recv().await;
            })
        })
        .collect();
    check.checkpoint("created");
    drop(tx);
    check.block_on(async {
        for h in handles {
            h.await.unwrap();
        }
    });
    check.checkpoint("closed");
    let r = check.finish();
    assert!(r.is_clean(), "{}", r.to_text());
    assert_eq!(
        r.lifecycle.columns,
        ["baseline", "created", "closed", "final"]
    );
    let row = r
        .lifecycle
        .rows
        .iter()
        .find(|row| row.kind == Kind::Task && row.component == "leakcheck-tests::engine")
        .unwrap_or_else(|| panic!("no task row in {:#?}", r.lifecycle));
    assert_eq!(row.counts, [0, 3, 0, 0]);
    assert!(r.to_text().contains("3 (+3)"), "{}", r.to_text());
}

#[test]
fn rules_from_a_file_allow_a_thread_and_say_where_they_come_from() {
    let dir = std::env::temp_dir().join(format!("leakcheck-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leakcheck.toml");
    std::fs::write(
        &file,
        "[[allow]]\nname = \"global-ticker\"\nreason = \"a library's one global ticker thread\"\nkind = \"thread\"\nthread_name = '^global-ticker$'\n",
    )
    .unwrap();
    let check = Check::builder().with_file(&file).unwrap().start().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::Builder::new()
        .name("global-ticker".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    let r = check.finish();
    drop(tx);
    t.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(r.is_clean(), "{}", r.to_text());
    let s = r.known().next().expect("a known survivor");
    match &s.status {
        Status::Known {
            rule,
            reason,
            origin,
        } => {
            assert_eq!(rule, "global-ticker");
            assert!(reason.contains("global ticker"));
            assert!(origin.as_deref().unwrap().ends_with("leakcheck.toml"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        r.to_text().contains("allowed by  rule `global-ticker`"),
        "{}",
        r.to_text()
    );
}

#[test]
fn a_blocked_worker_degrades_the_dump_with_a_note_instead_of_hanging() {
    let check = Check::builder()
        .label("blocked worker")
        .settle_deadline(Duration::from_millis(50))
        .dump_timeout(Duration::from_millis(100))
        .shutdown_timeout(Duration::from_millis(100))
        .start_multi_thread(1)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    check.handle().spawn(async move {
        // Blocks the only worker thread: a dump can never complete.
        let _ = rx.recv();
    });
    let started = std::time::Instant::now();
    let r = check.finish();
    drop(tx);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!r.is_clean());
    assert!(
        r.notes
            .iter()
            .any(|n| n.message.contains("task dump did not finish")),
        "{}",
        r.to_text()
    );
    let task = r
        .unknown()
        .find(|s| s.kind == Kind::Task)
        .expect("the blocking task");
    assert_eq!(task.component, "leakcheck-tests::engine");
    assert!(task.await_trace.is_none());
}

#[test]
fn symbols_resolved_while_a_check_waits_leave_nothing_of_their_own() {
    // Survivors that outlast a tenth of the deadline have their symbols resolved on a thread of
    // leakcheck's (loading debug info, the first time in a process): neither that thread nor
    // what it opened is a survivor or lingers.
    let check = Check::builder()
        .label("symbols while waiting")
        .settle_deadline(Duration::from_millis(300))
        .start_multi_thread(1)
        .unwrap();
    check.handle().spawn(std::future::pending::<()>());
    let r = check.finish();
    let text = r.to_text();
    let task = r
        .unknown()
        .find(|s| s.kind == Kind::Task)
        .expect("the pending task");
    assert!(task.user_frame.is_some(), "{text}");
    let exe = std::env::current_exe().unwrap().display().to_string();
    for s in &r.survivors {
        assert!(!s.description.contains("leakcheck-symbols"), "{text}");
        if s.kind == Kind::Fd {
            assert!(
                !s.description.contains(&exe)
                    && !s.description.contains("/usr/lib/debug/")
                    && !s.description.ends_with("/maps"),
                "{text}"
            );
        }
    }
    assert!(
        r.lingered
            .iter()
            .all(|l| !l.description.contains("leakcheck-symbols")),
        "{text}"
    );
}

#[test]
fn json_carries_the_schema_version_and_the_classification() {
    let r = run("known_singleton", true);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["schema_version"], leakcheck::SCHEMA_VERSION);
    assert_eq!(v["survivors"][0]["count"], 1);
    assert_eq!(v["clean"], true);
    let s = &v["survivors"][0];
    assert_eq!(s["kind"], "task");
    assert_eq!(s["status"], "known");
    assert_eq!(s["rule"], "metrics-ticker");
    assert_eq!(s["component"], "leakcheck-tests::scenarios");
}

#[test]
fn normalized_reports_are_stable_snapshots() {
    let r = run("channel_sender_kept_alive", true);
    insta::assert_snapshot!("channel_sender_kept_alive", r.to_normalized());
    let r = run("known_singleton", true);
    insta::assert_snapshot!("known_singleton", r.to_normalized());
    let r = run("tcp_connection_left_open", true);
    insta::assert_snapshot!("tcp_connection_left_open", r.to_normalized());
}

/// Different tasks spawned through one executor function are told apart by their await point,
/// and the normalized report is the same on every run (groups and their order are stable).
#[test]
fn a_shared_executor_pool_reports_the_same_on_every_run() {
    let first = run("shared_executor_pool", true);
    let text = first.to_normalized();
    // The connections (×3, one group), the reaper and the dispatcher: three groups.
    assert_eq!(
        text.matches("UNKNOWN task").count(),
        3,
        "{}",
        first.to_text()
    );
    for i in 1..50 {
        let again = run("shared_executor_pool", true).to_normalized();
        assert_eq!(again, text, "run {i} differs");
    }
    insta::assert_snapshot!("shared_executor_pool", text);
}

/// A file another test of the process opens during the check and closes while the runtime shuts
/// down is not said to be held by the leaked task; the leaked task's own listener is.
#[test]
fn a_file_another_test_closes_during_the_shutdown_is_not_held_by_the_leaked_task() {
    use std::sync::mpsc::{self, channel};

    /// Dropped with the leaked task: has the neighbour close its file, then waits for it.
    struct CloseNeighboursFile(mpsc::Sender<()>, mpsc::Receiver<()>);
    impl Drop for CloseNeighboursFile {
        fn drop(&mut self) {
            let _ = self.0.send(());
            let _ = self.1.recv_timeout(Duration::from_secs(10));
        }
    }

    let (open, open_rx) = channel::<()>();
    let (opened_tx, opened) = channel::<()>();
    let (close, close_rx) = channel::<()>();
    let (closed_tx, closed) = channel::<()>();
    // Stands for a test running next to this one (it predates the check, as libtest's do).
    // Started in a check's turn, so that no other test's check sees a thread appear.
    let turn = Check::builder()
        .label("a neighbour starts")
        .kinds(Kinds::parse("fds").unwrap())
        .start()
        .unwrap();
    let neighbour = std::thread::spawn(move || {
        open_rx.recv().unwrap();
        let file = std::fs::File::open("Cargo.toml").unwrap();
        opened_tx.send(()).unwrap();
        close_rx.recv().unwrap();
        drop(file);
        closed_tx.send(()).unwrap();
    });
    assert!(turn.finish().is_clean());
    let check = Check::builder()
        .label("a neighbour's file")
        .kinds(Kinds::parse("tasks,fds").unwrap())
        .start_multi_thread(2)
        .unwrap();
    let guard = CloseNeighboursFile(close, closed);
    check.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tokio::spawn(async move {
            let _guard = guard;
            while listener.accept().await.is_ok() {}
        });
        tokio::task::yield_now().await;
    });
    open.send(()).unwrap();
    opened.recv().unwrap();
    let r = check.finish();
    neighbour.join().unwrap();
    assert_eq!(r.unknown().count(), 1, "{}", r.to_text());
    let held = r
        .notes
        .iter()
        .find(|n| n.message.starts_with("held by the leaked task(s)"))
        .unwrap_or_else(|| panic!("a note on what the task held: {}", r.to_text()));
    assert!(held.message.contains("tcp 127.0.0.1:"), "{}", held.message);
    assert!(!held.message.contains("Cargo.toml"), "{}", held.message);
}

/// A check may be finished on another thread than the one that started it: neither thread is
/// the test's leak (the finishing one was made during the check, but it is the one running it).
#[test]
fn a_check_finished_on_another_thread_blames_neither_thread() {
    let check = Check::builder()
        .label("finished elsewhere")
        .kinds(Kinds::parse("threads,fds").unwrap())
        .start()
        .unwrap();
    let r = std::thread::spawn(move || check.finish()).join().unwrap();
    assert!(r.is_clean(), "{}", r.to_text());
    let leaked = std::thread::Builder::new()
        .name("made-in-check".into())
        .spawn(|| {})
        .unwrap();
    let check = Check::builder()
        .label("a thread really left")
        .kinds(Kinds::parse("threads").unwrap())
        .settle_deadline(Duration::from_millis(100))
        .start()
        .unwrap();
    let (stop, wait) = std::sync::mpsc::channel::<()>();
    let left = std::thread::Builder::new()
        .name("left-running".into())
        .spawn(move || wait.recv())
        .unwrap();
    let r = std::thread::spawn(move || check.finish()).join().unwrap();
    assert!(
        r.unknown()
            .any(|s| s.kind == Kind::Thread && s.name.as_deref() == Some("left-running")),
        "{}",
        r.to_text()
    );
    drop(stop);
    left.join().unwrap().unwrap_err();
    leaked.join().unwrap();
}

/// A descriptor open at the baseline, closed during the check, and a new one of the same type
/// given its number (the lowest free one): `/proc` shows the same number and target
/// (`anon_inode:[eventfd]`), yet the new one is a leak. Under `cargo test` this is how a
/// runtime's drivers hid behind those of a runtime another test had just released.
#[test]
fn a_descriptor_number_closed_and_made_again_during_a_check_is_a_new_descriptor() {
    fn eventfd() -> i32 {
        // SAFETY: a plain system call; the descriptor is closed below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        fd
    }
    fn close(fd: i32) {
        // SAFETY: a descriptor this test made and closes once.
        unsafe { libc::close(fd) };
    }
    // Another thread may take the freed number first (under `cargo test`): then try again.
    for _ in 0..5 {
        // Opened in a check's turn, so that no other test's check sees it appear (under
        // `cargo test`); that check reports it, as it should.
        let turn = Check::builder()
            .label("the first descriptor")
            .kinds(Kinds::parse("fds").unwrap())
            .settle_deadline(Duration::from_millis(10))
            .start()
            .unwrap();
        let before = eventfd();
        let r = turn.finish();
        assert!(
            r.unknown().any(|s| s.id == before.to_string()),
            "{}",
            r.to_text()
        );
        let check = Check::builder()
            .label("a number made again")
            .kinds(Kinds::parse("fds").unwrap())
            .settle_deadline(Duration::from_millis(50))
            .start()
            .unwrap();
        close(before);
        let again = eventfd();
        let r = check.finish();
        close(again);
        if again != before {
            continue;
        }
        let leaked: Vec<_> = r.unknown().collect();
        assert_eq!(leaked.len(), 1, "{}", r.to_text());
        assert_eq!(leaked[0].kind, Kind::Fd, "{}", r.to_text());
        assert_eq!(leaked[0].id, again.to_string(), "{}", r.to_text());
        assert!(leaked[0].description.contains("eventfd"), "{}", r.to_text());
        return;
    }
    panic!("the closed number was never given to the new descriptor");
}

/// A child that existed at the baseline and runs another program during the check (a spawn
/// caught between fork and exec reads as this process's command line at the baseline) is the
/// same child: not a survivor, and counted under the name it had at the baseline.
#[test]
fn a_child_that_execs_during_the_check_is_counted_under_its_first_name() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    // Started inside a check of its own, so that no other test's check (under `cargo test`)
    // sees the child or its pipe made during it.
    let starting = Check::builder()
        .label("starts the child")
        .kinds(Kinds::parse("fds,children").unwrap())
        .settle_deadline(Duration::from_millis(10))
        .start()
        .unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read go; exec sleep 30"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = starting.finish();
    assert!(
        started.unknown().any(|s| s.id == pid.to_string()),
        "{}",
        started.to_text()
    );
    let check = Check::builder()
        .label("child execs")
        .kinds(Kinds::parse("children").unwrap())
        .settle_deadline(Duration::from_millis(100))
        .start()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let execd = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep")) {
        assert!(std::time::Instant::now() < execd, "the child did not exec");
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = check.finish();
    child.kill().unwrap();
    child.wait().unwrap();
    let text = r.to_text();
    assert!(
        !r.survivors.iter().any(|s| s.id == pid.to_string()),
        "{text}"
    );
    let row = |name: &str| {
        r.lifecycle
            .rows
            .iter()
            .find(|row| row.kind == Kind::Child && row.component == name)
            .map(|row| row.counts.clone())
    };
    // Under `cargo test` another test's children may come and go meanwhile: this child keeps
    // its row, and no row grows for it.
    assert!(row("sh").is_some_and(|c| c[1] >= 1), "{text}");
    assert!(row("sleep").is_none_or(|c| c[1] <= c[0]), "{text}");
}

/// A leaked child names the line that started it (std's `Command::spawn` goes through
/// leakcheck's `posix_spawnp` hook), and the hint points there.
#[test]
fn a_leaked_child_names_the_line_that_started_it() {
    let r = run("child_left_running", true);
    let text = r.to_text();
    let s = r
        .unknown()
        .find(|s| s.kind == Kind::Child)
        .expect("the child");
    let at = s.user_frame.as_ref().expect("where it was started");
    assert_eq!(at.file.as_deref(), Some("tests/src/scenarios.rs"), "{text}");
    assert!(at.function.contains("child_running"), "{text}");
    assert!(
        text.contains("hint: kill and wait for the child started at `leakcheck_tests::scenarios::child_running"),
        "{text}"
    );
}
