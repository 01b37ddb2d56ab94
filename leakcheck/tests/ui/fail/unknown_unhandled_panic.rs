use leakcheck::leak_test;

#[leak_test(unhandled_panic = "abort")]
async fn t() {}

fn main() {}
