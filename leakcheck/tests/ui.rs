//! `#[leak_test]` misuse is a compile error at the right span, with a message that says what to
//! write instead (`ui/fail/*.stderr` are the reviewed messages). Regenerate the messages with
//! `TRYBUILD=overwrite cargo test --test ui`.
//!
//! Every accepted form (`ui/pass`) is compiled here as a module of this test binary, and its
//! tests run, rather than by trybuild: a pass case makes trybuild build (not just check)
//! leakcheck's dependencies again in its own target directory, 137-157 s of a CI run, where
//! the fail cases alone need only `cargo check` (53-69 s).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
}

// The pass cases are standalone programs (`fn main() {}`), so that each reads on its own.
#[allow(dead_code)]
#[path = "ui/pass/every_option.rs"]
mod every_option;
#[allow(dead_code)]
#[path = "ui/pass/on_panic.rs"]
mod on_panic;
#[allow(dead_code)]
#[path = "ui/pass/tokio_arguments.rs"]
mod tokio_arguments;
