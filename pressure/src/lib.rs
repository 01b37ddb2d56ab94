//! The pressure run: the event bus beside the plain clients of its brokers, every run under a
//! leak check.
//!
//! A team with a Go event bus once "proved" that their bus leaked thousands of goroutines at
//! every load level: they counted before `Close()` ran, slept a fixed five seconds, divided
//! messages by that sleep and called it throughput. This program does that comparison
//! honestly: the same levels (500 to 10 000 messages over 5 topics, keyed by aggregate), each
//! run inside a `leakcheck` check with checkpoints `connected`, `subscribed`, `published`,
//! `drained`, `closed`; throughput from the first publish to the last message handled; latency
//! from a stamp in every payload; loss, duplicates and per-aggregate order counted on the
//! receiving side; and the same workload through the broker's own client as the baseline,
//! so that the bus/raw ratio shows what the bus adds.
//!
//! `cargo run --release -p pressure` (memory); `--features kafka,nats -- --backend all` adds
//! Tansu and nats-server (installed by `scripts/brokers`, or named by
//! `KAFKA_BOOTSTRAP_SERVERS` and `NATS_URL`).

pub mod chart;
#[cfg(feature = "kafka")]
mod raw_kafka;
#[cfg(feature = "nats")]
mod raw_nats;
pub mod row;
pub mod run;
pub mod tracker;
pub mod transport;
pub mod workload;
