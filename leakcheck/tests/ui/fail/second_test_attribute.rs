use leakcheck::leak_test;

#[leak_test]
#[test]
fn doubled() {}

fn main() {}
