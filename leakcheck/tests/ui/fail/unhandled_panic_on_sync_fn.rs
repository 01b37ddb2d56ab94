use leakcheck::leak_test;

#[leak_test(unhandled_panic = "shutdown_runtime")]
fn t() {}

fn main() {}
