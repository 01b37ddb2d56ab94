use leakcheck::leak_test;

// `crate` was tokio's path under #[tokio::test]; here it is leakcheck's.
#[leak_test(crate = "::tokio")]
async fn t() {}

fn main() {}
