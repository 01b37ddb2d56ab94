//! 200 trivial `#[leak_test]` tests (see `tests.rs`).

mod overhead {
    pub use leakcheck::leak_test as attr;
}

include!("tests.rs");
