//! `#[leak_test]` end to end: the scenario corpus through the attribute (`corpus`) and each
//! option and configuration path (`options`). Every test of this binary is a leak test, so no
//! unchecked test can be blamed for another's threads or descriptors under `cargo test`.

mod corpus;
mod options;
mod parallel;
