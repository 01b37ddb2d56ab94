use leakcheck::leak_test;

#[leak_test(on_panic = "abort")]
#[should_panic]
async fn on_panic() {
    panic!("boom");
}

fn main() {}
