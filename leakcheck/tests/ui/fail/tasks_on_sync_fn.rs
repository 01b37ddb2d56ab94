use leakcheck::leak_test;

#[leak_test(kinds = ["tasks", "threads"])]
fn sync_test() {}

fn main() {}
