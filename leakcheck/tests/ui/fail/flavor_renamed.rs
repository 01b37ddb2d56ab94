use leakcheck::leak_test;

#[leak_test(flavor = "single_thread")]
async fn t() {}

fn main() {}
