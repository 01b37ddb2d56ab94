use leakcheck::leak_test;

#[leak_test(flavor = "multi_thread", unhandled_panic = "shutdown_runtime")]
async fn t() {}

fn main() {}
