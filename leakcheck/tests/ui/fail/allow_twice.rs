use leakcheck::leak_test;

#[leak_test(allow = ["metrics-ticker", "thread_name=^rdk:", "metrics-ticker"])]
async fn allow() {}

fn main() {}
