use leakcheck::leak_test;

#[leak_test]
async fn with_args(n: u32) {
    let _ = n;
}

fn main() {}
