use leakcheck::leak_test;

// Any other test that panics fails anyway: `on_panic` only matters with `#[should_panic]`.
#[leak_test(on_panic = "fail")]
async fn on_panic() {}

fn main() {}
