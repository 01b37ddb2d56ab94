use leakcheck::leak_test;

#[leak_test(setle = "1s")]
async fn typo() {}

fn main() {}
