//! `#[leak_test]` misuse is a compile error at the right span, with a message that says what to
//! write instead (`ui/fail/*.stderr` are the reviewed messages); every accepted form compiles
//! (`ui/pass`). Regenerate the messages with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
