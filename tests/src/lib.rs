//! The leak scenario corpus: each scenario has a leaky body and its clean twin, plus what the
//! leak must look like in a report (`expect`). The engine tests (`tests/engine`) run them through
//! the `Check` API; the attribute tests (`tests/leak_test`) run the same corpus through
//! `#[leak_test]`.

/// The broker fixtures, from the workspace's `brokers` crate (shared with the pressure run).
pub mod brokers {
    pub use brokers::*;
}
pub mod expect;
pub mod scenarios;
