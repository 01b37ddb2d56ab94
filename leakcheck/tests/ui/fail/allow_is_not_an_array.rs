use leakcheck::leak_test;

#[leak_test(allow = "metrics-ticker")]
async fn allow() {}

fn main() {}
