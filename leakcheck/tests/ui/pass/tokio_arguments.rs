// Every argument form #[tokio::test] takes, after replacing `tokio::test` with `leak_test`.
use leakcheck::leak_test;

#[leak_test(flavor = "current_thread")]
async fn current_thread() {}

#[leak_test(flavor = "multi_thread")]
async fn multi_thread() {}

#[leak_test(flavor = "multi_thread", worker_threads = 1)]
async fn one_worker() {}

#[leak_test(start_paused = true)]
async fn paused() {}

#[leak_test(flavor = "current_thread", start_paused = false)]
async fn not_paused() {}

#[leak_test(flavor = "multi_thread", start_paused = false)]
async fn multi_thread_not_paused() {}

#[leak_test(unhandled_panic = "ignore")]
async fn ignore_panics() {}

#[leak_test(flavor = "current_thread", unhandled_panic = "shutdown_runtime")]
async fn shutdown_on_panic() {}

#[leak_test(crate = "::leakcheck")]
async fn with_crate() {}

fn main() {}
