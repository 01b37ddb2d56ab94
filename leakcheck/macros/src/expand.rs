//! The expansion: the test function keeps its attributes, signature and body; its body becomes
//! one call into `leakcheck::__private`. On any error the function is still expanded (with
//! default options) next to the error, so IDEs keep working.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::{braced, Attribute, Signature, Visibility};

use crate::args::{self, Options, Target};

/// A function item whose body is kept as tokens (no need to parse statements).
struct ItemFn {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: TokenStream,
}

impl Parse for ItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "#[leak_test] goes on a function: `fn name() { .. }` or `async fn name() { .. }`",
            )
        })?;
        let content;
        let brace = braced!(content in input);
        let inner: TokenStream = content.parse()?;
        let mut body = TokenStream::new();
        brace.surround(&mut body, |t| t.extend(inner));
        Ok(ItemFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

pub(crate) fn leak_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let input: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            // Not a function: keep the item as written, next to the error.
            let mut out = e.into_compile_error();
            out.extend(item);
            return out;
        }
    };
    let target = Target {
        is_async: input.sig.asyncness.is_some(),
        should_panic: input.attrs.iter().any(is_should_panic),
    };
    let checked = check_signature(&input).and_then(|()| args::parse(args, &target));
    match checked {
        Ok(options) => expand(input, &options),
        Err(e) => {
            let mut out = expand(input, &Options::default());
            out.extend(e.into_compile_error());
            out
        }
    }
}

fn check_signature(f: &ItemFn) -> syn::Result<()> {
    let sig = &f.sig;
    if let Some(attr) = f.attrs.iter().find(|a| is_test_attribute(a)) {
        return Err(syn::Error::new_spanned(
            attr,
            "remove this test attribute: #[leak_test] declares the test itself (and replaces #[tokio::test])",
        ));
    }
    if !sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "a test function takes no arguments",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a test function cannot be generic",
        ));
    }
    if let Some(c) = &sig.constness {
        return Err(syn::Error::new_spanned(
            c,
            "a test function cannot be `const`",
        ));
    }
    Ok(())
}

/// `#[should_panic]`, `#[should_panic(expected = "..")]`, `#[should_panic = ".."]`.
fn is_should_panic(a: &Attribute) -> bool {
    a.path().is_ident("should_panic")
}

/// `#[test]`, `#[tokio::test]`, `#[core::prelude::v1::test]` and the like.
fn is_test_attribute(a: &Attribute) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == "test")
}

fn expand(input: ItemFn, o: &Options) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        body,
    } = input;
    let krate = o
        .krate
        .as_ref()
        .map(ToTokens::to_token_stream)
        .unwrap_or_else(|| quote!(::leakcheck));
    let name = &sig.ident;
    let name_str = name.to_string();
    let output = match &sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => t.to_token_stream(),
    };

    let mut options = quote!(#krate::__private::Options::default());
    if o.multi_thread {
        let workers = match o.worker_threads {
            Some(n) => quote!(::core::option::Option::Some(#n)),
            None => quote!(::core::option::Option::None),
        };
        options.extend(quote!(.multi_thread(#workers)));
    } else if o.start_paused {
        options.extend(quote!(.current_thread(true)));
    }
    if o.shutdown_on_panic {
        options.extend(quote!(.shutdown_on_panic()));
    }
    if let Some(ms) = o.settle_ms {
        options.extend(quote!(.settle_ms(#ms)));
    }
    if let Some(ms) = o.shutdown_timeout_ms {
        options.extend(quote!(.shutdown_timeout_ms(#ms)));
    }
    if let Some(b) = o.backtrace {
        options.extend(quote!(.backtrace(#b)));
    }
    if let Some([tasks, threads, fds, children]) = o.kinds {
        options.extend(quote!(.kinds(#tasks, #threads, #fds, #children)));
    }
    for spec in &o.allow {
        options.extend(quote!(.allow(#spec)));
    }
    if let Some(fail) = o.on_panic_fail {
        options.extend(quote!(.on_panic_fail(#fail)));
    }
    if o.snapshot {
        options.extend(quote! {
            .snapshot(|name, text| #krate::__private::insta::assert_snapshot!(name, text))
        });
    }

    let test = quote! {
        #krate::__private::Test {
            name: #name_str,
            module_path: ::core::module_path!(),
            manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
        }
    };
    // A `#[should_panic]` test returns `()` (rustc says so when it does not): its runner may
    // return instead of panicking, when a leak is to fail it (`on_panic = "fail"`).
    let returns_unit = match &sig.output {
        syn::ReturnType::Default => true,
        syn::ReturnType::Type(_, t) => matches!(&**t, syn::Type::Tuple(t) if t.elems.is_empty()),
    };
    let should_panic = returns_unit && attrs.iter().any(is_should_panic);
    let call = if sig.asyncness.take().is_some() {
        let run = if should_panic {
            quote!(run_async_should_panic)
        } else {
            quote!(run_async)
        };
        // One boxed future type per output type: fewer copies of the runner to compile.
        quote! {
            let body: ::core::pin::Pin<::std::boxed::Box<dyn ::core::future::Future<Output = #output>>> =
                ::std::boxed::Box::pin(async move #body);
            #krate::__private::#run(#test, #options, body)
        }
    } else {
        let run = if should_panic {
            quote!(run_sync_should_panic)
        } else {
            quote!(run_sync)
        };
        quote! {
            #krate::__private::#run(#test, #options, move || -> #output #body)
        }
    };
    let mut tokens = TokenStream::new();
    for a in &attrs {
        a.to_tokens(&mut tokens);
    }
    // Spanned at the name, so "this is a test" diagnostics point at the function.
    tokens.extend(quote_spanned!(name.span()=> #[::core::prelude::v1::test]));
    vis.to_tokens(&mut tokens);
    sig.to_tokens(&mut tokens);
    tokens.extend([TokenTree::Group(proc_macro2::Group::new(
        proc_macro2::Delimiter::Brace,
        call,
    ))]);
    tokens
}
