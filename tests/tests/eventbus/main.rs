//! The event bus under leak checks: one suite of behaviours (`suite`), run against each backend
//! (`memory`; Kafka and NATS join with their own fixtures), plus bus-level checks of bad input
//! (`inputs`). Every test is a `#[leak_test]`: a test that passes also proves the bus closed
//! without leaving a task, thread, descriptor or child behind.

/// Runs suite behaviours as tests on a fixture: `suite_on!(Memory::new(); ordering, outage)`.
macro_rules! suite_on {
    ($fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[leak_test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                suite::$name(&$fixture).await;
            }
        )*
    };
}

mod inputs;
mod kafka;
mod memory;
mod nats;
mod suite;
mod support;
