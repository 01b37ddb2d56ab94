use leakcheck::leak_test;

#[leak_test(
    flavor = "multi_thread",
    worker_threads = 2,
    settle = "2s",
    shutdown_timeout = "500ms",
    allow = ["task_name=^metrics-ticker$", "thread_name=^rdk:"],
    backtrace = false,
    snapshot,
    kinds = ["tasks", "threads", "fds", "children"],
    crate = "::leakcheck",
)]
async fn every_option() {}

#[leak_test(start_paused = true, snapshot = false)]
async fn paused() {}

#[leak_test(kinds = ["fds"], settle = "1m")]
fn sync_with_kinds() {}

#[leak_test]
#[should_panic(expected = "boom")]
async fn with_should_panic() {
    panic!("boom");
}

#[leak_test]
async fn returns_result() -> Result<(), std::io::Error> {
    Ok(())
}

mod reexported {
    pub use leakcheck as lc;
}

#[leak_test(crate = "reexported::lc")]
fn through_a_reexport() {}

fn main() {}
