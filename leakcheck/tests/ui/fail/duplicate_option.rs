use leakcheck::leak_test;

#[leak_test(settle = "1s", settle = "2s")]
async fn twice() {}

fn main() {}
