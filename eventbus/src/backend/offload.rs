//! Blocking client calls run off the async workers, on a short-lived named thread that is joined
//! before the caller goes on: dropping or flushing a broker client blocks (rdkafka: 10-100 ms),
//! and a blocking-pool thread would outlive the call (tokio keeps idle ones for 10 s), which a
//! leak check would rightly report after close.

use tokio::sync::oneshot;

/// Runs `f` on a new thread named `name`, awaits it and joins the thread. A panic in `f` is
/// resumed here.
pub(crate) async fn off_runtime<T, F>(name: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        })
        .expect("spawn a thread");
    let outcome = rx.await;
    // The thread has sent its result (or died): joining it only waits for its exit.
    let _ = thread.join();
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // catch_unwind above makes the thread always send.
        Err(_) => panic!("the thread `{name}` ended without a result"),
    }
}
