use leakcheck::leak_test;

#[leak_test(flavor = "multi_thread")]
fn sync_test() {}

fn main() {}
