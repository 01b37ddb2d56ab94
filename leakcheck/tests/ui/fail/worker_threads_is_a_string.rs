use leakcheck::leak_test;

#[leak_test(flavor = "multi_thread", worker_threads = "2")]
async fn workers() {}

fn main() {}
