//! The event bus under leak checks: one suite of behaviours (`suite`), run against each backend
//! (`memory`; Kafka and NATS join with their own fixtures), plus bus-level checks of bad input
//! (`inputs`). Every test is a `#[leak_test]`: a test that passes also proves the bus closed
//! without leaving a task, thread, descriptor or child behind.

mod inputs;
mod kafka;
mod memory;
mod nats;
mod suite;
mod support;
