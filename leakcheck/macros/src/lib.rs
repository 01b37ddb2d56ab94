//! The `#[leak_test]` attribute of [leakcheck](https://docs.rs/leakcheck). It only reads its
//! options and the call site, then calls `leakcheck::__private::run_async` or `run_sync`; the
//! documentation is on the re-export, `leakcheck::leak_test`.

use proc_macro::TokenStream;

mod args;
mod expand;

/// Runs a test under a leak check. See `leakcheck::leak_test` for the options.
#[proc_macro_attribute]
pub fn leak_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::leak_test(args.into(), item.into()).into()
}
