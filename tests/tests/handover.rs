//! A check may take the end state of the check before it as its baseline instead of reading
//! the process again (under `cargo test` that is most checks). What is made between the two
//! checks, here by the second check's own thread before it starts, was there before it: it
//! must not be blamed on it. What is closed between them was not: a descriptor made again
//! with its number and target in the second check is a leak of that check. Run a few times:
//! a turn of another test taken between the two checks makes the second read the process
//! itself, which would hide a fault.
//!
//! What these tests do between two checks is unchecked: another check running meanwhile would
//! count it as its own. So they are one test, in a binary of their own.

use std::fs::File;
use std::time::Duration;

use leakcheck::{Check, Kind, Kinds, Report, Status};

const TRIES: usize = 5;

const FDS: Kinds = Kinds {
    tasks: false,
    threads: false,
    fds: true,
    children: false,
};

/// Runs a clean check, then `between`, then a second check around `during`; its report.
fn check(kinds: Kinds, between: impl FnOnce(), during: impl FnOnce()) -> Report {
    let builder = || {
        Check::builder()
            .kinds(kinds)
            .settle_deadline(Duration::from_millis(100))
            .report_dir(None)
    };
    let first = builder().start().expect("the first check starts");
    let r = first.finish();
    assert!(r.is_clean(), "{}", r.to_text());
    between();
    let second = builder().start().expect("the second check starts");
    during();
    second.finish()
}

#[test]
fn what_happens_between_two_checks() {
    a_descriptor_opened_between_two_checks_is_not_blamed_on_the_second();
    a_directory_read_between_two_checks_is_not_blamed_on_the_second();
    a_descriptor_closed_between_two_checks_and_opened_again_in_the_second_is_its_leak();
    a_thread_started_between_two_checks_is_not_blamed_on_the_second();
}

fn a_descriptor_opened_between_two_checks_is_not_blamed_on_the_second() {
    for _ in 0..TRIES {
        let mut file = None;
        let r = check(
            FDS,
            || file = Some(File::open(env!("CARGO_MANIFEST_DIR")).expect("opens")),
            || (),
        );
        assert!(r.is_clean(), "{}", r.to_text());
        drop(file);
    }
}

/// `read_dir` opens its descriptor inside libc (`opendir`), out of sight of the `open` hooks.
fn a_directory_read_between_two_checks_is_not_blamed_on_the_second() {
    for _ in 0..TRIES {
        let mut dir = None;
        let r = check(
            FDS,
            || dir = Some(std::fs::read_dir(env!("CARGO_MANIFEST_DIR")).expect("reads")),
            || (),
        );
        assert!(r.is_clean(), "{}", r.to_text());
        drop(dir);
    }
}

fn a_descriptor_closed_between_two_checks_and_opened_again_in_the_second_is_its_leak() {
    let dir = env!("CARGO_MANIFEST_DIR");
    for _ in 0..TRIES {
        let before = File::open(dir).expect("opens");
        let mut again = None;
        // The number closed is the lowest free one: the second open gets it back.
        let r = check(FDS, || drop(before), || again = File::open(dir).ok());
        drop(again);
        let leaked: Vec<_> = r.unknown().collect();
        assert_eq!(leaked.len(), 1, "{}", r.to_text());
        assert_eq!(leaked[0].kind, Kind::Fd);
        assert_eq!(leaked[0].status, Status::Unknown);
        assert!(leaked[0].description.contains(dir), "{}", r.to_text());
    }
}

fn a_thread_started_between_two_checks_is_not_blamed_on_the_second() {
    let threads = Kinds {
        tasks: false,
        threads: true,
        fds: false,
        children: false,
    };
    for _ in 0..TRIES {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut thread = None;
        let r = check(
            threads,
            || {
                thread = Some(
                    std::thread::Builder::new()
                        .name("between-checks".into())
                        .spawn(move || {
                            let _ = rx.recv();
                        })
                        .expect("spawns"),
                );
            },
            || (),
        );
        drop(tx);
        thread.expect("spawned").join().expect("joins");
        assert!(r.is_clean(), "{}", r.to_text());
    }
}
