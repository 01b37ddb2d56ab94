//! What `#[leak_test]` runs. The attribute only captures call-site facts ([`Test`]) and the
//! options it was given ([`Options`]); everything else happens here, where it is unit-tested:
//! configuration (variables, then `leakcheck.toml`, then defaults, with the attribute's options
//! on top), the runtime, the body (its panic is never hidden; with `on_panic = "fail"` a
//! `#[should_panic]` test that leaks returns instead of panicking, so it fails), the verdict, the
//! JSON report and the snapshot.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::check::{judge, RuntimeSpec};
use crate::config::OnPanic;
use crate::{Check, CheckBuilder, Error, Kinds, Mode, Report};

/// Where the test is, as the attribute saw it.
#[derive(Clone, Copy, Debug)]
pub struct Test {
    /// The function's name.
    pub name: &'static str,
    /// `module_path!()` at the test.
    pub module_path: &'static str,
    /// `env!("CARGO_MANIFEST_DIR")` of the test's crate: where `leakcheck.toml` is looked for.
    pub manifest_dir: &'static str,
}

impl Test {
    /// `crate::module::name`, the report's label and the JSON report's file name.
    fn path(&self) -> String {
        format!("{}::{}", self.module_path, self.name)
    }
}

/// The runtime a test gets, as `#[tokio::test]` offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    CurrentThread {
        paused: bool,
    },
    /// `None`: one worker per CPU, as tokio's default.
    MultiThread(Option<usize>),
}

/// The attribute's options; every one left out comes from the configuration.
#[derive(Clone, Debug)]
pub struct Options {
    flavor: Flavor,
    settle: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    backtrace: Option<bool>,
    kinds: Option<Kinds>,
    allow: Vec<&'static str>,
    snapshot: Option<fn(&str, &str)>,
    on_panic: Option<OnPanic>,
    shutdown_on_panic: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flavor: Flavor::CurrentThread { paused: false },
            settle: None,
            shutdown_timeout: None,
            backtrace: None,
            kinds: None,
            allow: Vec::new(),
            snapshot: None,
            on_panic: None,
            shutdown_on_panic: false,
        }
    }
}

impl Options {
    /// `flavor = "current_thread"` (the default), `start_paused = ...`.
    pub fn current_thread(mut self, paused: bool) -> Self {
        self.flavor = Flavor::CurrentThread { paused };
        self
    }

    /// `flavor = "multi_thread"`, `worker_threads = ...`.
    pub fn multi_thread(mut self, workers: Option<usize>) -> Self {
        self.flavor = Flavor::MultiThread(workers);
        self
    }

    /// `unhandled_panic = "shutdown_runtime"`: a task's panic shuts the runtime down and fails
    /// the test (needs `--cfg tokio_unstable`).
    pub fn shutdown_on_panic(mut self) -> Self {
        self.shutdown_on_panic = true;
        self
    }

    /// `settle = "..."`, in milliseconds.
    pub fn settle_ms(mut self, ms: u64) -> Self {
        self.settle = Some(Duration::from_millis(ms));
        self
    }

    /// `shutdown_timeout = "..."`, in milliseconds.
    pub fn shutdown_timeout_ms(mut self, ms: u64) -> Self {
        self.shutdown_timeout = Some(Duration::from_millis(ms));
        self
    }

    /// `backtrace = ...`.
    pub fn backtrace(mut self, on: bool) -> Self {
        self.backtrace = Some(on);
        self
    }

    /// `kinds = [...]`, already validated by the attribute.
    pub fn kinds(mut self, tasks: bool, threads: bool, fds: bool, children: bool) -> Self {
        self.kinds = Some(Kinds {
            tasks,
            threads,
            fds,
            children,
        });
        self
    }

    /// One entry of `allow = [...]`: a `[[rule]]` name or `key=regex`.
    pub fn allow(mut self, spec: &'static str) -> Self {
        self.allow.push(spec);
        self
    }

    /// `snapshot`: `assert` asserts (name, normalized report) with insta in the test's crate.
    pub fn snapshot(mut self, assert: fn(&str, &str)) -> Self {
        self.snapshot = Some(assert);
        self
    }

    /// `on_panic = "fail"` (`true`) or `"report"` (`false`).
    pub fn on_panic_fail(mut self, fail: bool) -> Self {
        self.on_panic = Some(if fail { OnPanic::Fail } else { OnPanic::Report });
        self
    }

    fn configure(&self, test: &Test) -> Result<CheckBuilder, Error> {
        let manifest_dir = test.manifest_dir;
        let mut b = Check::builder()
            .label(test.path())
            .in_leak_test()
            .with_env_from(|k| match k {
                "CARGO_MANIFEST_DIR" => Some(manifest_dir.to_string()),
                _ => std::env::var(k).ok(),
            })?;
        if let Some(d) = self.settle {
            b = b.settle_deadline(d);
        }
        if let Some(d) = self.shutdown_timeout {
            b = b.shutdown_timeout(d);
        }
        if let Some(on) = self.backtrace {
            b = b.backtraces(on);
        }
        if let Some(k) = self.kinds {
            b = b.kinds(k);
        }
        if let Some(p) = self.on_panic {
            b.on_panic = p;
        }
        b.shutdown_on_panic = self.shutdown_on_panic;
        for spec in &self.allow {
            b = b.allow_spec(spec)?;
        }
        Ok(b)
    }

    fn runtime(&self) -> RuntimeSpec {
        match self.flavor {
            Flavor::CurrentThread { paused } => RuntimeSpec::CurrentThread(paused),
            Flavor::MultiThread(n) => RuntimeSpec::MultiThread(
                n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            ),
        }
    }
}

thread_local! {
    /// The check of the test running on this thread, for [`checkpoint`].
    static CURRENT: Cell<*const Check> = const { Cell::new(std::ptr::null()) };
    /// `Some` while [`capture`] runs: reports are handed back instead of failing the test.
    static CAPTURED: RefCell<Option<Vec<Report>>> = const { RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// What [`say`] printed on this thread, for the unit tests.
    static SAID: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Prints to stderr (the unit tests also keep what was said).
fn say(text: &str) {
    #[cfg(test)]
    SAID.with(|s| s.borrow_mut().push(text.to_string()));
    eprintln!("{text}");
}

/// Runs an async test body on its own instrumented runtime under a check.
pub fn run_async<F: Future>(test: Test, options: Options, body: F) -> F::Output {
    run(test, options, false, |check| check.block_on(body), None)
}

/// Runs a synchronous test body under a check of threads, descriptors and children.
pub fn run_sync<T>(test: Test, options: Options, body: impl FnOnce() -> T) -> T {
    run(test, options, true, |_| body(), None)
}

/// [`run_async`] for a `#[should_panic]` test: with `on_panic = "fail"`, a panicking body that
/// leaked returns instead of panicking, so the test fails.
pub fn run_async_should_panic<F: Future<Output = ()>>(test: Test, options: Options, body: F) {
    run(
        test,
        options,
        false,
        |check| check.block_on(body),
        Some(|| ()),
    )
}

/// [`run_sync`] for a `#[should_panic]` test (see [`run_async_should_panic`]).
pub fn run_sync_should_panic(test: Test, options: Options, body: impl FnOnce()) {
    run(test, options, true, |_| body(), Some(|| ()))
}

/// `returned`: what a `#[should_panic]` test returns when its panic is swallowed (`None` for
/// other tests, whose panic always goes on).
fn run<T>(
    test: Test,
    options: Options,
    sync: bool,
    body: impl FnOnce(&Check) -> T,
    returned: Option<fn() -> T>,
) -> T {
    assert!(
        CURRENT.with(|c| c.get().is_null()),
        "a leak check is already running on this thread: a #[leak_test] function cannot be called from inside another leak test (`{}`)",
        test.path()
    );
    let mut on_panic = OnPanic::Report;
    let check = options
        .configure(&test)
        .and_then(|b| {
            let b = crate::console::from_env(b)?;
            let spec = if sync {
                RuntimeSpec::None
            } else {
                options.runtime()
            };
            on_panic = b.on_panic;
            Check::start(b, spec)
        })
        .unwrap_or_else(|e| panic!("leakcheck could not check `{}`: failed to {e}", test.path()));
    let outcome = {
        let _current = Current::set(&check);
        catch_unwind(AssertUnwindSafe(|| body(&check)))
    };
    let (report, mode) = check.finish_and_write();
    let output = match outcome {
        Ok(output) => output,
        Err(panic) => {
            // The panic was printed when it happened; the leaks follow it, then it goes on,
            // unless a leak is to fail a `#[should_panic]` test: then the test returns.
            if report.is_clean() {
                resume_unwind(panic)
            }
            let swallow = returned.filter(|_| on_panic == OnPanic::Fail && mode == Mode::Fail);
            say(&panicked_and_leaked(&test, &report, swallow.is_some()));
            match swallow {
                Some(returned) => return returned(),
                None => resume_unwind(panic),
            }
        }
    };
    let captured = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(reports) => {
            reports.push(report.clone());
            true
        }
        None => false,
    });
    if captured {
        return output;
    }
    judge(&report, mode);
    if let Some(assert) = options.snapshot {
        assert(test.name, &report.to_normalized());
    }
    output
}

/// What is printed when a body panicked and left unknown survivors.
fn panicked_and_leaked(test: &Test, report: &Report, swallowed: bool) -> String {
    let path = test.path();
    let mut text = format!(
        "leakcheck: `{path}` panicked (see above) and also left survivors:\n{}",
        report.to_text()
    );
    if swallowed {
        text.push_str(&format!(
            "\nleakcheck: swallowed the panic of `{path}` because it leaked (on_panic = \"fail\"): the #[should_panic] test returns normally and fails with \"test did not panic as expected\". Fix the leak, or allow it"
        ));
    }
    text
}

/// Sets [`CURRENT`] for the body's duration.
struct Current;

impl Current {
    fn set(check: &Check) -> Current {
        CURRENT.with(|c| c.set(check));
        Current
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(std::ptr::null()));
    }
}

/// Records a checkpoint (live counts per kind and component) in the check of the
/// `#[leak_test]` running on this thread; the lifecycle table of its report shows it.
///
/// # Panics
/// Outside a `#[leak_test]` body's thread (a spawned task of a multi-thread runtime runs
/// elsewhere): call it from the test body, or use [`Check::checkpoint`] with the `Check` API.
pub fn checkpoint(name: &str) {
    CURRENT.with(|c| {
        let check = c.get();
        assert!(
            !check.is_null(),
            "leakcheck::checkpoint(\"{name}\") was called outside a #[leak_test] body: call it from the test function itself (not from a spawned task), or use Check::checkpoint"
        );
        // SAFETY: `Current` clears the pointer before the check it points to is finished or
        // dropped, and only this thread reads it.
        unsafe { &*check }.checkpoint(name);
    });
}

/// Runs `f` (which runs `#[leak_test]` functions) and returns their reports instead of failing
/// them: for testing leak tests themselves.
pub fn capture(f: impl FnOnce()) -> Vec<Report> {
    let previous = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let reports = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
    reports.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Test = Test {
        name: "t",
        module_path: "krate::m",
        manifest_dir: "/nonexistent-leakcheck-dir",
    };

    fn opts() -> Options {
        Options::default().settle_ms(100)
    }

    #[test]
    fn a_clean_async_body_returns_its_output() {
        // Tasks only: the unchecked unit tests of this binary open sockets and start children.
        let reports = capture(|| {
            let v = run_async(TEST, opts().kinds(true, false, false, false), async { 7 });
            assert_eq!(v, 7);
        });
        assert_eq!(reports.len(), 1);
        assert!(reports[0].is_clean());
        assert_eq!(reports[0].label.as_deref(), Some("krate::m::t"));
    }

    #[test]
    fn a_leak_fails_the_test_with_the_report() {
        let panic = catch_unwind(|| {
            run_async(TEST, opts().kinds(true, false, false, false), async {
                tokio::spawn(std::future::pending::<()>());
            })
        })
        .unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with("leakcheck: leaked 1 task in `krate::m::t`"),
            "{msg}"
        );
    }

    #[test]
    fn the_body_panic_wins_over_the_leak() {
        let panic = catch_unwind(|| {
            run_async(TEST, opts().kinds(true, false, false, false), async {
                tokio::spawn(std::future::pending::<()>());
                panic!("the body's own failure");
            })
        })
        .unwrap_err();
        assert_eq!(
            panic.downcast_ref::<&str>().copied(),
            Some("the body's own failure")
        );
    }

    fn tasks() -> Options {
        opts().kinds(true, false, false, false)
    }

    /// What `run` printed on this thread during `f`.
    fn said(f: impl FnOnce()) -> Vec<String> {
        SAID.with(|s| s.borrow_mut().clear());
        f();
        SAID.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    async fn leak_and_panic() {
        tokio::spawn(std::future::pending::<()>());
        panic!("boom");
    }

    #[test]
    fn a_should_panic_test_that_leaks_passes_by_default_and_its_leak_is_printed() {
        let said = said(|| {
            let panic = catch_unwind(|| run_async_should_panic(TEST, tasks(), leak_and_panic()))
                .unwrap_err();
            assert_eq!(panic.downcast_ref::<&str>().copied(), Some("boom"));
        });
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("leakcheck: `krate::m::t` panicked (see above) and also left survivors:\nleakcheck: leaked 1 task"),
            "{}",
            said[0]
        );
        assert!(!said[0].contains("swallowed"), "{}", said[0]);
    }

    #[test]
    fn on_panic_fail_swallows_the_panic_of_a_should_panic_test_that_leaks() {
        let said = said(|| {
            let returned = catch_unwind(|| {
                run_async_should_panic(TEST, tasks().on_panic_fail(true), leak_and_panic())
            });
            assert!(returned.is_ok(), "the panic went on");
        });
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("left survivors:\nleakcheck: leaked 1 task"),
            "{}",
            said[0]
        );
        assert!(
            said[0].ends_with("leakcheck: swallowed the panic of `krate::m::t` because it leaked (on_panic = \"fail\"): the #[should_panic] test returns normally and fails with \"test did not panic as expected\". Fix the leak, or allow it"),
            "{}",
            said[0]
        );
        // A synchronous test too: its thread outlives the check, and ends after it.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let returned = catch_unwind(AssertUnwindSafe(|| {
            run_sync_should_panic(
                TEST,
                opts().kinds(false, true, false, false).on_panic_fail(true),
                move || {
                    std::thread::spawn(move || {
                        let _ = stopped.recv();
                    });
                    panic!("boom");
                },
            )
        }));
        drop(stop);
        assert!(returned.is_ok(), "the panic went on");
    }

    #[test]
    fn on_panic_fail_without_a_leak_lets_the_panic_go_on() {
        let said = said(|| {
            let panic = catch_unwind(|| {
                run_async_should_panic(TEST, tasks().on_panic_fail(true), async {
                    panic!("clean boom")
                })
            })
            .unwrap_err();
            assert_eq!(panic.downcast_ref::<&str>().copied(), Some("clean boom"));
        });
        assert!(said.is_empty(), "{said:?}");
    }

    #[test]
    fn on_panic_fail_never_turns_a_panicking_test_into_a_pass() {
        // Not a `#[should_panic]` test: it fails by its panic, leak or not.
        let said = said(|| {
            let panic =
                catch_unwind(|| run_async(TEST, tasks().on_panic_fail(true), leak_and_panic()))
                    .unwrap_err();
            assert_eq!(panic.downcast_ref::<&str>().copied(), Some("boom"));
        });
        assert!(
            said[0].contains("left survivors") && !said[0].contains("swallowed"),
            "{said:?}"
        );
    }

    #[test]
    fn a_check_of_no_kind_fails_the_test() {
        let panic =
            catch_unwind(|| run_async(TEST, opts().kinds(false, false, false, false), async {}))
                .unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(
            msg.starts_with("leakcheck could not check `krate::m::t`: failed to configure CheckBuilder::kinds: every kind is off"),
            "{msg}"
        );
    }

    #[test]
    fn warn_mode_prints_instead_of_failing() {
        let check = Check::builder()
            .mode(crate::Mode::Warn)
            .report_dir(None)
            .settle_deadline(Duration::from_millis(20))
            .kinds(Kinds {
                tasks: true,
                threads: false,
                fds: false,
                children: false,
            })
            .start_current_thread()
            .unwrap();
        check.block_on(async {
            tokio::spawn(std::future::pending::<()>());
        });
        let report = check.finish_test();
        assert_eq!(report.unknown().count(), 1);
    }

    #[test]
    fn checkpoints_reach_the_current_check() {
        let reports = capture(|| {
            run_async(TEST, opts().kinds(true, false, false, false), async {
                checkpoint("started");
                let t = tokio::spawn(async {});
                t.await.unwrap();
            })
        });
        assert_eq!(
            reports[0].lifecycle.columns,
            ["baseline", "started", "final"]
        );
    }

    #[test]
    fn a_check_inside_a_check_panics_instead_of_waiting_for_itself() {
        let panic = catch_unwind(|| {
            run_sync(TEST, opts(), || run_sync(TEST, opts(), || ()));
        })
        .unwrap_err();
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("already running on this thread"), "{msg}");
    }

    #[test]
    fn a_task_only_leak_test_inside_another_panics_too() {
        let tasks = || opts().kinds(true, false, false, false);
        let panic = catch_unwind(|| {
            run_async(TEST, tasks(), async { run_async(TEST, tasks(), async {}) });
        })
        .unwrap_err();
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("inside another leak test"), "{msg}");
    }

    #[test]
    fn checkpoint_outside_a_test_panics_with_advice() {
        let panic = catch_unwind(|| checkpoint("x")).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(msg.contains("outside a #[leak_test] body"), "{msg}");
    }

    #[test]
    fn a_bad_allow_entry_names_itself() {
        let panic =
            catch_unwind(|| run_sync(TEST, opts().allow("no-such-rule"), || ())).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("`no-such-rule`") && msg.contains("leakcheck.toml"),
            "{msg}"
        );
        let panic = catch_unwind(|| run_sync(TEST, opts().allow("thread=x"), || ())).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(msg.contains("thread_name"), "{msg}");
    }

    #[test]
    fn an_allow_pattern_files_the_survivor_as_known() {
        let reports = capture(|| {
            run_async(
                TEST,
                opts()
                    .kinds(true, false, false, false)
                    .allow("spawn_location=harness\\.rs"),
                async {
                    tokio::spawn(std::future::pending::<()>());
                },
            )
        });
        assert!(reports[0].is_clean(), "{}", reports[0].to_text());
        assert_eq!(reports[0].known().count(), 1);
    }

    #[cfg(tokio_unstable)]
    #[test]
    fn unhandled_panic_shutdown_runtime_fails_the_test_as_tokio_does() {
        let panic = catch_unwind(|| {
            run_async(TEST, tasks().shutdown_on_panic(), async {
                tokio::spawn(async { panic!("task boom") });
                std::future::pending::<()>().await;
            })
        })
        .unwrap_err();
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(msg.contains("unhandled panic"), "{msg}");
    }

    #[test]
    fn multi_thread_and_paused_runtimes_are_built() {
        let reports = capture(|| {
            run_async(
                TEST,
                opts()
                    .multi_thread(Some(2))
                    .kinds(true, false, false, false),
                async {
                    assert_eq!(tokio::runtime::Handle::current().metrics().num_workers(), 2);
                },
            );
            run_async(
                TEST,
                opts().current_thread(true).kinds(true, false, false, false),
                async {
                    let t = tokio::time::Instant::now();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    assert!(t.elapsed() >= Duration::from_secs(3600));
                },
            );
        });
        assert_eq!(reports.len(), 2);
    }
}
