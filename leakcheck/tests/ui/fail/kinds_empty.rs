use leakcheck::leak_test;

// A check of no kind would pass every test.
#[leak_test(kinds = [])]
async fn kinds() {}

fn main() {}
