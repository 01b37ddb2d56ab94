//! The check of a whole test binary (`check_test_binary!`), for suites of plain
//! `#[tokio::test]`s that nobody will rewrite before trusting the tool.
//!
//! A process constructor takes the baseline of threads, descriptors and children before libtest
//! starts; an exit hook settles, classifies and reports once the harness is done, and fails the
//! process on an unknown survivor. Tasks are not checked: their runtimes are not ours. The check
//! holds no turn (the `#[leak_test]` checks of the binary run meanwhile, each exclusive), and what
//! a check inside it has judged is left to that check: its threads and descriptors by their
//! recording generation, its children by its span in time.
//!
//! Under nextest each test is a process of its own (`--exact <name>`): the check is exact for
//! that test. Under `cargo test` it covers the whole binary, and names the test of a survivor
//! where the thread's name (a thread spawned without a name carries its test's) or the creation
//! site (a frame in a test function) tells.

use std::ffi::c_void;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::classify::Provenance;
use super::start::{lock, Check, RuntimeSpec};
use crate::config::{Kinds, Mode};
use crate::process;
use crate::report::{Kind, Note};

/// The exit status of a test binary that leaked (libtest's for a failed run).
const FAILED: i32 = 101;

/// Whether a whole binary's check is running: only then do other checks record their spans.
static WHOLE: AtomicBool = AtomicBool::new(false);
/// The spans of the checks that ran inside the whole binary's.
static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());
/// The check started by the constructor, or why it could not start.
static STATE: Mutex<Option<Result<Check, String>>> = Mutex::new(None);

/// A check that ran inside the whole binary's: what it checked, and when.
struct Span {
    gen: Option<u64>,
    threads: bool,
    fds: bool,
    children: bool,
    /// The name of the check's thread (its test's, under libtest).
    thread_name: String,
    /// Boot ticks at its baseline and at its end (`u64::MAX` while it runs).
    from: u64,
    to: u64,
}

/// A check's entry in [`SPANS`]; dropping it ends the span.
pub(crate) struct Nested(usize);

impl Nested {
    /// Records a check of `kinds` starting at `ticks`, when a whole binary's check runs.
    pub(super) fn start(kinds: &Kinds, gen: Option<u64>, ticks: u64) -> Option<Nested> {
        if !WHOLE.load(Ordering::Acquire) {
            return None;
        }
        let tid = process::current_tid();
        let thread_name = process::stat(&format!("/proc/self/task/{tid}/stat"))
            .map(|s| s.comm)
            .unwrap_or_default();
        let mut spans = lock(&SPANS);
        spans.push(Span {
            gen,
            threads: kinds.threads,
            fds: kinds.fds,
            children: kinds.children,
            thread_name,
            from: ticks,
            to: u64::MAX,
        });
        Some(Nested(spans.len() - 1))
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        if let Some(s) = lock(&SPANS).get_mut(self.0) {
            s.to = process::boot_ticks();
        }
    }
}

/// What the check of a whole binary knows about its tests.
#[derive(Debug, Default)]
pub(crate) struct Binary {
    /// The one test this process runs (`--exact <name>`, as nextest runs each test).
    pub(super) only: Option<String>,
    /// Every test of the binary, listed at exit.
    pub(super) tests: Vec<String>,
}

impl Binary {
    /// Whether a check inside this one judged this thread (named `comm`) or descriptor
    /// already. A thread named after another test was left to that test (the check inside
    /// took it for that test's), so it is judged here.
    pub(super) fn checked_inside(&self, p: &Provenance, kind: Kind, comm: Option<&str>) -> bool {
        let Some(gen) = p.gen else {
            return false;
        };
        lock(&SPANS).iter().any(|s| {
            s.gen == Some(gen)
                && match kind {
                    Kind::Thread => {
                        s.threads
                            && !comm.is_some_and(|c| c != s.thread_name && self.is_test_name(c))
                    }
                    Kind::Fd => s.fds,
                    _ => false,
                }
        })
    }

    /// Whether a child started at `start` (boot ticks) did so inside a check of children.
    pub(super) fn child_checked_inside(&self, start: u64) -> bool {
        lock(&SPANS)
            .iter()
            .any(|s| s.children && s.from <= start && start <= s.to)
    }

    /// Whether `comm` is a thread name libtest gives a test's thread.
    pub(super) fn is_test_name(&self, comm: &str) -> bool {
        self.tests.iter().any(|t| process::truncate(t) == comm)
    }

    /// The test that left a survivor: the one test of this process, else the test its thread's
    /// name says (one spawned without a name carries its test's), else the test function its
    /// creation site is in.
    pub(super) fn test_of(&self, comm: Option<&str>, p: &Provenance) -> Option<String> {
        if let Some(t) = &self.only {
            return Some(t.clone());
        }
        if let Some(comm) = comm {
            let mut named = self.tests.iter().filter(|t| process::truncate(t) == comm);
            if let (Some(t), None) = (named.next(), named.next()) {
                return Some(t.clone());
            }
        }
        test_of_function(&p.user()?.function, &self.tests).map(str::to_string)
    }
}

/// The test whose function `function` (`krate::module::test::{{closure}}`) is, or is in.
fn test_of_function<'a>(function: &str, tests: &'a [String]) -> Option<&'a str> {
    let (_krate, path) = function.split_once("::")?;
    tests
        .iter()
        .filter(|t| {
            path.strip_prefix(t.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
        .max_by_key(|t| t.len())
        .map(String::as_str)
}

/// How libtest was asked to run.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    /// The one test filter given with `--exact`.
    only: Option<String>,
}

impl Run {
    /// `None` when the binary only lists its tests or prints its help.
    fn parse(args: &[String]) -> Option<Run> {
        // libtest's options that take a value, as separate arguments.
        const VALUED: [&str; 9] = [
            "--skip",
            "--test-threads",
            "--format",
            "--color",
            "--logfile",
            "--shuffle-seed",
            "-Z",
            "--report-time",
            "--ensure-time",
        ];
        let mut exact = false;
        let mut filters = Vec::new();
        let mut args = args.iter().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--list" | "--help" | "-h" => return None,
                "--exact" => exact = true,
                v if VALUED.contains(&v) => {
                    args.next();
                }
                v if v.starts_with('-') => {}
                v => filters.push(v.to_string()),
            }
        }
        let only = match (exact, filters.as_slice()) {
            (true, [one]) => Some(one.clone()),
            _ => None,
        };
        Some(Run { only })
    }
}

/// This process's arguments, read from `/proc` (std's may not be set up yet in a constructor).
fn process_args() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the check of this test binary and registers its end at exit: what
/// `check_test_binary!`'s constructor runs, before `main`.
pub(crate) fn check_test_binary(manifest_dir: &'static str, module_path: &'static str) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::AcqRel) || !process::supported() {
        return;
    }
    // A panic must not unwind out of a constructor.
    let _ = catch_unwind(|| {
        let Some(run) = Run::parse(&process_args()) else {
            return;
        };
        let krate = module_path.split("::").next().unwrap_or(module_path);
        let label = match &run.only {
            Some(test) => format!("{krate}::{test}"),
            None => format!("{krate} (whole test binary)"),
        };
        let started = Check::builder()
            .label(label.clone())
            .with_env_from(|k| match k {
                "CARGO_MANIFEST_DIR" => Some(manifest_dir.to_string()),
                _ => std::env::var(k).ok(),
            })
            .and_then(|mut b| {
                b.whole_binary = true;
                if !b.kinds.any_process() {
                    return Ok(None);
                }
                Check::start(b, RuntimeSpec::None).map(Some)
            });
        let state = match started {
            Ok(None) => return,
            Ok(Some(mut check)) => {
                check.binary = Some(Binary {
                    only: run.only,
                    tests: Vec::new(),
                });
                Ok(check)
            }
            Err(e) => Err(format!(
                "leakcheck could not check `{label}`: failed to {e}"
            )),
        };
        *lock(&STATE) = Some(state);
        WHOLE.store(true, Ordering::Release);
        // SAFETY: registers a function that takes no arguments and does not unwind.
        unsafe { libc::atexit(at_exit) };
    });
}

/// The exit hook: concludes the check and fails the process on an unknown survivor.
extern "C" fn at_exit() {
    let Some(state) = lock(&STATE).take() else {
        return;
    };
    let check = match state {
        Ok(check) => check,
        Err(message) => {
            eprintln!("{message}");
            exit_now();
        }
    };
    // This thread's thread-locals are gone already (exit destroys them before its hooks run),
    // and std's thread spawn uses them: conclude on a thread started directly.
    match on_fresh_thread(Box::new(move || conclude(check))) {
        Some(false) => {}
        Some(true) => exit_now(),
        None => {
            eprintln!("leakcheck: the check of this test binary could not conclude (see above)");
            exit_now();
        }
    }
}

/// Settles, reports and says whether the process is to fail.
fn conclude(mut check: Check) -> bool {
    if let Some(b) = &mut check.binary {
        b.tests = process::list_tests();
        if b.only.is_none() {
            check.notes.push(Note {
                kind: None,
                message: format!(
                    "checked once for the whole test binary ({} tests in one process, as under cargo test): a survivor names its test where its thread's name or creation site tells; under cargo nextest (one process per test) the check is exact per test",
                    b.tests.len()
                ),
            });
        }
    }
    let (report, mode) = check.finish_and_write();
    if report.is_clean() {
        return false;
    }
    eprintln!("{}", report.to_text());
    mode == Mode::Fail
}

fn exit_now() -> ! {
    let _ = std::io::stderr().flush();
    // SAFETY: ends the process at once; exit's other hooks and buffers are not needed.
    unsafe { libc::_exit(FAILED) }
}

type Job = Box<dyn FnOnce() -> bool + Send>;

/// Runs `job` on a thread made with `pthread_create` and waits for it: `None` if it panicked or
/// could not start.
fn on_fresh_thread(job: Job) -> Option<bool> {
    extern "C" fn run(arg: *mut c_void) -> *mut c_void {
        // SAFETY: `arg` is the `Job` boxed below, handed over once.
        let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
        // SAFETY: names this thread; the name is NUL-terminated and fits in 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"leakcheck-exit".as_ptr()) };
        process::mark_own();
        let verdict = catch_unwind(AssertUnwindSafe(job));
        match verdict {
            Ok(false) => std::ptr::without_provenance_mut(1),
            Ok(true) => std::ptr::without_provenance_mut(2),
            Err(_) => std::ptr::null_mut(),
        }
    }
    let arg = Box::into_raw(Box::new(job));
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is an out-param; `run` takes `arg` back.
    let rc = unsafe { libc::pthread_create(&mut thread, std::ptr::null(), run, arg.cast()) };
    if rc != 0 {
        // SAFETY: no thread started: `arg` is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return None;
    }
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `thread` was started above and is joined once.
    unsafe { libc::pthread_join(thread, &mut out) };
    match out.addr() {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        std::iter::once("bin")
            .chain(s.split_whitespace())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn listing_or_help_checks_nothing() {
        assert_eq!(Run::parse(&args("--list --format terse")), None);
        assert_eq!(Run::parse(&args("--help")), None);
    }

    #[test]
    fn one_exact_filter_names_the_test_as_nextest_runs_it() {
        let run = Run::parse(&args("--exact bus::publishes --nocapture")).unwrap();
        assert_eq!(run.only.as_deref(), Some("bus::publishes"));
        // Filters without --exact, or several, run any number of tests.
        assert_eq!(Run::parse(&args("bus::publishes")).unwrap().only, None);
        assert_eq!(Run::parse(&args("--exact a b")).unwrap().only, None);
        // A value of an option is no filter.
        let run = Run::parse(&args("--skip driver --exact a --test-threads 1")).unwrap();
        assert_eq!(run.only.as_deref(), Some("a"));
        assert_eq!(Run::parse(&args("")).unwrap().only, None);
    }

    #[test]
    fn a_frame_in_a_test_function_names_the_test() {
        let tests = ["bus::leaks".to_string(), "bus::leaks_more".to_string()];
        assert_eq!(
            test_of_function("one_line::bus::leaks::{{closure}}", &tests),
            Some("bus::leaks")
        );
        assert_eq!(
            test_of_function("one_line::bus::leaks_more", &tests),
            Some("bus::leaks_more")
        );
        assert_eq!(test_of_function("one_line::bus::helper", &tests), None);
        assert_eq!(test_of_function("main", &tests), None);
    }
}
