use leakcheck::leak_test;

#[leak_test(settle = 500)]
async fn settle() {}

fn main() {}
