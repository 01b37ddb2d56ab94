use leakcheck::leak_test;

#[leak_test(kinds = ["tasks", "sockets"])]
async fn kinds() {}

fn main() {}
