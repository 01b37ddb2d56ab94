use leakcheck::leak_test;

#[leak_test(kinds("tasks"))]
async fn list() {}

fn main() {}
