//! Procedural macros of `leakcheck`. The `#[leak_test]` attribute lands with its own issue; until
//! then this crate holds no macro, so that the workspace layout is final from the first commit.
