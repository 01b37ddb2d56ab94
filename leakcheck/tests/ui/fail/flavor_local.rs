use leakcheck::leak_test;

#[leak_test(flavor = "local")]
async fn t() {}

fn main() {}
