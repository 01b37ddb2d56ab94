use leakcheck::leak_test;

#[leak_test]
struct NotATest;

fn main() {}
