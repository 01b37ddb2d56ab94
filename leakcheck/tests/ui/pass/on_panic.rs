use leakcheck::leak_test;

// A leak fails this test even though it panics as expected.
#[leak_test(on_panic = "fail")]
#[should_panic(expected = "boom")]
async fn a_leak_fails_it() {
    panic!("boom");
}

#[leak_test(on_panic = "fail", kinds = ["threads"])]
#[should_panic]
fn sync_too() {
    panic!("boom");
}

// The default: a leak is printed after the panic, and the test passes.
#[should_panic = "boom"]
#[leak_test(on_panic = "report")]
async fn the_attribute_before_it_counts_too() {
    panic!("boom");
}

fn main() {}
