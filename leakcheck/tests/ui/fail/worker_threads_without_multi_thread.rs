use leakcheck::leak_test;

#[leak_test(worker_threads = 2)]
async fn workers() {}

fn main() {}
