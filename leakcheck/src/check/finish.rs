//! Finishing a check: settle every kind, shut the runtime down, build the report, judge it.

use std::time::Instant;

use super::lifecycle::lifecycle;
use super::start::{lock, ms, Check, ProcessState};
use crate::config::Mode;
use crate::process;
use crate::report::{Kind, Note, Report, SettleStats, Status, Survivor, SCHEMA_VERSION};

impl Check {
    /// Finishes as a test does: [`finish`](Self::finish), then writes the JSON report to the
    /// report directory (see [`CheckBuilder::report_dir`](crate::CheckBuilder::report_dir)), then, on an unknown survivor, panics
    /// with the text report ([`Mode::Fail`]) or prints it to stderr ([`Mode::Warn`]).
    ///
    /// This is what `#[leak_test]` does after the test body.
    pub fn finish_test(self) -> Report {
        let (report, mode) = self.finish_and_write();
        judge(&report, mode);
        report
    }

    /// [`finish`](Self::finish), then the JSON report; the mode is returned for [`judge`].
    pub(crate) fn finish_and_write(mut self) -> (Report, Mode) {
        let report = self.conclude();
        self.nested.take();
        // Written after the check ends its turn, while other checks may run: they know the file
        // as leakcheck's own (see `report::is_report_being_written`).
        self._adopt.take();
        // The recording ends inside the turn: ending it starts a new generation, which must
        // not happen after the next check's recording began (its origins would look stale).
        self.origins.take();
        self._turn.take();
        crate::report::write_json(&report, &self.report_dir);
        (report, self.mode)
    }

    /// Settles, classifies and reports. Tasks are checked while the runtime still runs (so their
    /// await traces can be dumped); then the runtime is shut down within the shutdown timeout and
    /// threads, descriptors and children are checked.
    pub fn finish(mut self) -> Report {
        self.conclude()
    }

    fn conclude(&mut self) -> Report {
        let mut notes = std::mem::take(&mut self.notes);
        let mut lingered = Vec::new();
        let mut stats = SettleStats {
            deadline_ms: ms(self.settle),
            ..Default::default()
        };
        let mut survivors = Vec::new();
        let start = Instant::now();

        if self.kinds.tasks {
            survivors.extend(self.settle_tasks(start, &mut stats, &mut lingered, &mut notes));
            survivors.extend(self.local_task_survivors());
        }
        let held = self.hold_on_leak(&survivors);
        let task_counts = self
            .kinds
            .tasks
            .then(|| self.counts_with(&ProcessState::default()));
        // What leaked tasks hold is closed when the runtime drops them: read it first.
        let fds_before_shutdown = (self.kinds.fds
            && survivors
                .iter()
                .any(|s| s.kind == Kind::Task && s.status == Status::Unknown))
        .then(|| {
            // Described now: a socket's address is gone from /proc once it is closed.
            process::fds()
                .into_iter()
                // The runtime's drivers, and pipes: under `cargo test` another test's child
                // process opens and closes pipes at any time, and a task rarely owns one.
                .filter(|f| !matches!(f.kind().as_str(), "epoll" | "eventfd" | "pipe"))
                // A file another test of this process has open (a snapshot it reads) closes
                // when that test is done with it, maybe during the shutdown: not held here.
                .filter(|f| !self.made_by_another_test(f))
                .map(|f| {
                    let d = f.describe();
                    (f, d)
                })
                .collect::<Vec<_>>()
        });
        if let Some(rt) = self.runtime.take() {
            if let Some(threads) = &self.runtime_threads {
                threads.note_workers(&rt);
            }
            let t = Instant::now();
            rt.shutdown_timeout(self.shutdown_timeout);
            if t.elapsed() >= self.shutdown_timeout {
                notes.push(Note {
                    kind: Some(Kind::Thread),
                    message: format!(
                        "the runtime did not shut down within {} ms: a blocking task (spawn_blocking or block_in_place) is still running; its thread is reported",
                        self.shutdown_timeout.as_millis()
                    ),
                });
            }
        }
        let mut last_state = ProcessState::default();
        if self.kinds.any_process() {
            let (found, state) =
                self.settle_process(start + self.settle, &mut stats, &mut lingered);
            if !held {
                self.hold_on_leak(&found);
            }
            let without_origin = found
                .iter()
                .any(|s| matches!(s.kind, Kind::Thread | Kind::Fd) && s.user_frame.is_none());
            if without_origin && !self.origins.as_ref().is_some_and(|r| r.works()) {
                notes.push(Note {
                    kind: None,
                    message: "threads and descriptors have no creation site: leakcheck's hooks of pthread_create, socket, open and the like are not in this binary (feature `origins` off, or not Linux with glibc on x86_64/aarch64)".into(),
                });
            }
            if let Some(note) = self.parallel_tests_note(&found, &state) {
                notes.push(note);
            }
            if let Some(note) = self.unsettled_listings_note() {
                notes.push(note);
            }
            survivors.extend(found);
            if let Some(before) = fds_before_shutdown {
                notes.extend(self.held_by_leaked_tasks(&before, &state));
            }
            last_state = state;
        }
        stats.elapsed_ms = ms(start.elapsed());
        if let Some(note) = without_line_tables(&survivors) {
            notes.push(note);
        }

        // Lifecycle: the checkpoints, then the end state.
        let mut fin = self.counts_with(&last_state);
        if let Some(tc) = task_counts {
            fin.extend(tc);
        }
        let lifecycle = lifecycle(&lock(&self.checkpoints), fin);

        survivors.sort_by(|a, b| {
            (
                a.status != Status::Unknown,
                a.kind,
                &a.component,
                &a.description,
            )
                .cmp(&(
                    b.status != Status::Unknown,
                    b.kind,
                    &b.component,
                    &b.description,
                ))
        });
        let clean = !survivors.iter().any(|s| s.status == Status::Unknown);
        if stats.timed_out && clean {
            stats.timed_out = false;
        }
        // Only a check that found nothing hands its end state to the next: a survivor, even
        // an allowed one, may be released right after it ends.
        if survivors.is_empty() {
            if let Some(turn) = &self._turn {
                turn.hand_over(self.kinds, last_state);
            }
        }
        Report {
            schema_version: SCHEMA_VERSION,
            label: self.label.clone(),
            clean,
            kinds: self.kinds.list(),
            survivors,
            lingered,
            settle: stats,
            lifecycle,
            notes,
        }
    }

    /// Descriptors opened during the check that the leaked tasks kept open until the runtime
    /// shut down (dropping them): an accept loop's listener, a client's socket. The runtime's
    /// own drivers (epoll, eventfd) are not listed, nor pipes (see below).
    fn held_by_leaked_tasks(
        &self,
        before: &[(process::Fd, String)],
        after: &ProcessState,
    ) -> Option<Note> {
        let held: Vec<&str> = before
            .iter()
            // A copy of a descriptor that existed before (tokio's signal receiver, which each
            // runtime duplicates) is the runtime's, not something a task opened.
            .filter(|(f, _)| !self.baseline.fds.iter().any(|b| b.target == f.target))
            // Closed by the shutdown: gone, or its number made again since.
            .filter(|(f, _)| !after.fds.contains(f))
            .map(|(_, d)| d.as_str())
            .collect();
        if held.is_empty() {
            return None;
        }
        Some(Note {
            kind: Some(Kind::Fd),
            message: format!(
                "held by the leaked task(s) until the runtime shut down and dropped them: {}",
                held.join(", ")
            ),
        })
    }

    /// Keeps the process alive for the configured hold when `found` has an unknown survivor;
    /// says whether it did.
    fn hold_on_leak(&self, found: &[Survivor]) -> bool {
        let unknown = found.iter().filter(|s| s.status == Status::Unknown).count();
        if self.hold.is_zero() || unknown == 0 {
            return false;
        }
        eprintln!(
            "leakcheck: {unknown} unknown survivor(s) in `{}`: holding pid {} for {} s before shutting down; attach tokio-console or a debugger now",
            self.label.as_deref().unwrap_or("check"),
            std::process::id(),
            self.hold.as_secs()
        );
        std::thread::sleep(self.hold);
        true
    }
}

/// Fails (panics with the text report) or warns (prints it) when `report` has an unknown
/// survivor.
pub(crate) fn judge(report: &Report, mode: Mode) {
    if !report.is_clean() {
        match mode {
            Mode::Warn => eprintln!("{}", report.to_text()),
            _ => panic!("{}", report.to_text()),
        }
    }
}

/// When survivors have frames but none of them a file: the binary has no line tables, so the
/// report cannot tell a library's frames from the user's. Says so rather than guess quietly.
fn without_line_tables(survivors: &[Survivor]) -> Option<Note> {
    let mut frames = survivors.iter().flat_map(|s| &s.backtrace).peekable();
    frames.peek()?;
    frames.all(|f| f.file.is_none()).then(|| Note {
        kind: None,
        message: "frames have no file or line: this binary was built without line tables (`debug = 0`, or stripped), so a library's frames cannot be told from yours and what a library made is not traced to your line; build tests with at least `debug = \"line-tables-only\"`".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Frame;

    fn with_frames(frames: Vec<Frame>) -> Survivor {
        Survivor {
            backtrace: frames,
            ..Survivor::plain(
                Kind::Task,
                "1".into(),
                "app".into(),
                Status::Unknown,
                "task".into(),
                None,
            )
        }
    }

    /// A check during which a listing of threads did not add up says that its verdict on
    /// threads is not proof; one without, says nothing.
    #[test]
    fn a_thread_list_that_did_not_add_up_is_noted() {
        let _alone = process::UNSETTLE_TESTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let kinds = crate::Kinds {
            tasks: false,
            threads: true,
            fds: false,
            children: false,
        };
        let run = |unsettle: bool| {
            let check = Check::builder()
                .kinds(kinds)
                .start_current_thread()
                .unwrap();
            process::UNSETTLE.set(unsettle);
            let report = check.finish();
            process::UNSETTLE.set(false);
            report
                .notes
                .iter()
                .any(|n| n.kind == Some(Kind::Thread) && n.message.contains("did not add up"))
        };
        assert!(run(true), "the note is there");
        assert!(!run(false), "no note without it");
    }

    #[test]
    fn frames_without_files_are_said_to_have_no_line_tables() {
        let bare = Frame {
            function: "app::serve".into(),
            file: None,
            line: None,
        };
        let lined = Frame {
            file: Some("src/main.rs".into()),
            line: Some(3),
            ..bare.clone()
        };
        assert!(without_line_tables(&[]).is_none());
        assert!(without_line_tables(&[with_frames(vec![])]).is_none());
        assert!(without_line_tables(&[with_frames(vec![lined.clone(), bare.clone()])]).is_none());
        let note = without_line_tables(&[with_frames(vec![bare])]).expect("a note");
        assert!(
            note.message.contains("line-tables-only"),
            "{}",
            note.message
        );
    }
}
