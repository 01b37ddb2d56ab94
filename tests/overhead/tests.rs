// 200 trivial tests, for the overhead benchmark (`scripts/bench-leak-test`): built twice, once
// with `#[leak_test]` (`leak_test_200`) and once with `#[tokio::test]` (`tokio_test_200`). The
// attribute is chosen by the `overhead` module each target defines.

macro_rules! ten {
    ($($m:ident)*) => {
        $(
            mod $m {
                use super::overhead::attr;
                ten!(@fns t0 t1 t2 t3 t4 t5 t6 t7 t8 t9);
            }
        )*
    };
    (@fns $($t:ident)*) => {
        $(
            #[attr]
            async fn $t() {
                tokio::task::yield_now().await;
            }
        )*
    };
}

ten!(m00 m01 m02 m03 m04 m05 m06 m07 m08 m09 m10 m11 m12 m13 m14 m15 m16 m17 m18 m19);
