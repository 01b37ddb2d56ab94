//! 200 trivial `#[tokio::test]` tests (see `tests.rs`).

mod overhead {
    pub use tokio::test as attr;
}

include!("tests.rs");
