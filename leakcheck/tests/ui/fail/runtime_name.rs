use leakcheck::leak_test;

#[leak_test(name = "my-runtime")]
async fn t() {}

fn main() {}
