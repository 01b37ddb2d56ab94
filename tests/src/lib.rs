//! The leak scenario corpus: each scenario has a leaky body and its clean twin, plus what the
//! leak must look like in a report. The engine tests (`tests/engine`) run them through the
//! `Check` API; the `#[leak_test]` tests will run the same corpus through the attribute.

pub mod scenarios;
