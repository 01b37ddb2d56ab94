//! The attribute's options, parsed in two stages as tokio's macros do: first every `key = value`
//! is collected with its span (unknown and duplicate keys are errors there), then values and
//! combinations are checked against the function they annotate.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Lit, Meta, Token};

/// Every option, in the order the error message lists them.
pub(crate) const KEYS: [&str; 12] = [
    "flavor",
    "worker_threads",
    "start_paused",
    "unhandled_panic",
    "settle",
    "shutdown_timeout",
    "allow",
    "backtrace",
    "snapshot",
    "kinds",
    "on_panic",
    "crate",
];

const KINDS: [&str; 4] = ["tasks", "threads", "fds", "children"];

/// One `key = value` (or a bare `key`) as written.
struct Raw {
    key: String,
    span: Span,
    value: Option<Expr>,
}

/// The options after validation.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) multi_thread: bool,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) start_paused: bool,
    /// `unhandled_panic = "shutdown_runtime"`.
    pub(crate) shutdown_on_panic: bool,
    pub(crate) settle_ms: Option<u64>,
    pub(crate) shutdown_timeout_ms: Option<u64>,
    pub(crate) allow: Vec<syn::LitStr>,
    pub(crate) backtrace: Option<bool>,
    pub(crate) snapshot: bool,
    /// tasks, threads, fds, children.
    pub(crate) kinds: Option<[bool; 4]>,
    /// `Some(true)`: `on_panic = "fail"`; `Some(false)`: `"report"`.
    pub(crate) on_panic_fail: Option<bool>,
    pub(crate) krate: Option<syn::Path>,
}

/// What the options are checked against.
pub(crate) struct Target {
    pub(crate) is_async: bool,
    /// The function has a `#[should_panic]` attribute.
    pub(crate) should_panic: bool,
}

/// Stage one: collects the options with their spans.
fn collect(args: proc_macro2::TokenStream) -> syn::Result<Vec<Raw>> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    let mut raws: Vec<Raw> = Vec::new();
    for meta in metas {
        let (path, value) = match meta {
            Meta::Path(p) => (p, None),
            Meta::NameValue(nv) => (nv.path, Some(nv.value)),
            Meta::List(l) => {
                return Err(syn::Error::new_spanned(
                    &l,
                    format!(
                        "write options as `key = value`: `{0}(...)` is not an option form; valid keys: {1}",
                        path_name(&l.path),
                        KEYS.join(", ")
                    ),
                ))
            }
        };
        let key = path_name(&path);
        if key == "name" {
            return Err(syn::Error::new_spanned(
                &path,
                "`name` (tokio's runtime name) is not an option of #[leak_test]: leakcheck names its runtime's threads `leakcheck-rt`; drop `name`",
            ));
        }
        if !KEYS.contains(&key.as_str()) {
            return Err(syn::Error::new_spanned(
                &path,
                format!("unknown option `{key}`; valid keys: {}", KEYS.join(", ")),
            ));
        }
        if raws.iter().any(|r| r.key == key) {
            return Err(syn::Error::new_spanned(
                &path,
                format!("duplicate option `{key}`"),
            ));
        }
        raws.push(Raw {
            key,
            span: path.span(),
            value,
        });
    }
    Ok(raws)
}

fn path_name(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Both stages.
pub(crate) fn parse(args: proc_macro2::TokenStream, target: &Target) -> syn::Result<Options> {
    let raws = collect(args)?;
    let mut o = Options::default();
    let mut flavor_span = None;
    let mut workers_span = None;
    let mut paused_span = None;
    let mut unhandled_span = None;
    let mut kinds_span = None;
    let mut on_panic_span = None;
    for r in &raws {
        match r.key.as_str() {
            "flavor" => {
                let s = string(r)?;
                o.multi_thread = match s.value().as_str() {
                    "current_thread" => false,
                    "multi_thread" => true,
                    "local" => {
                        return Err(syn::Error::new_spanned(
                            &s,
                            "`flavor = \"local\"` is not supported: write `flavor = \"current_thread\"` (the body runs on the test's thread, so it need not be `Send`; for `spawn_local`, use `leakcheck::LocalSet`)",
                        ))
                    }
                    renamed @ ("single_thread" | "basic_scheduler" | "threaded_scheduler") => {
                        let now = if renamed == "threaded_scheduler" {
                            "multi_thread"
                        } else {
                            "current_thread"
                        };
                        return Err(syn::Error::new_spanned(
                            &s,
                            format!("the flavor `{renamed}` is called `{now}`: write `flavor = \"{now}\"`"),
                        ));
                    }
                    other => {
                        return Err(syn::Error::new_spanned(
                            &s,
                            format!("unknown flavor `{other}`: expected \"current_thread\" or \"multi_thread\""),
                        ))
                    }
                };
                flavor_span = Some(r.span);
            }
            "worker_threads" => {
                let n = int(r)?;
                if n == 0 {
                    return Err(syn::Error::new(
                        value_span(r),
                        "`worker_threads` must be at least 1",
                    ));
                }
                o.worker_threads = Some(n as usize);
                workers_span = Some(r.span);
            }
            "start_paused" => {
                o.start_paused = boolean(r)?;
                paused_span = Some(r.span);
            }
            "unhandled_panic" => {
                let s = string(r)?;
                o.shutdown_on_panic = match s.value().as_str() {
                    "ignore" => false,
                    "shutdown_runtime" => true,
                    other => {
                        return Err(syn::Error::new_spanned(
                            &s,
                            format!("unknown unhandled_panic `{other}`: expected \"ignore\" (the default) or \"shutdown_runtime\""),
                        ))
                    }
                };
                unhandled_span = Some(r.span);
            }
            "settle" => o.settle_ms = Some(duration_ms(r)?),
            "shutdown_timeout" => o.shutdown_timeout_ms = Some(duration_ms(r)?),
            "allow" => {
                let list = strings(r)?;
                for (i, s) in list.iter().enumerate() {
                    if list[..i].iter().any(|t| t.value() == s.value()) {
                        return Err(syn::Error::new_spanned(
                            s,
                            format!("`allow` names {:?} twice", s.value()),
                        ));
                    }
                }
                o.allow = list;
            }
            "backtrace" => o.backtrace = Some(boolean(r)?),
            "snapshot" => o.snapshot = r.value.is_none() || boolean(r)?,
            "kinds" => {
                let mut k = [false; 4];
                let list = strings(r)?;
                if list.is_empty() {
                    return Err(syn::Error::new(
                        value_span(r),
                        format!(
                            "`kinds` is empty, and a check of no kind would pass every test: list some of {}",
                            KINDS.join(", ")
                        ),
                    ));
                }
                for s in list {
                    match KINDS.iter().position(|k| *k == s.value()) {
                        Some(i) => k[i] = true,
                        None => {
                            return Err(syn::Error::new_spanned(
                                &s,
                                format!(
                                    "unknown kind `{}`: expected some of {}",
                                    s.value(),
                                    KINDS.join(", ")
                                ),
                            ))
                        }
                    }
                }
                o.kinds = Some(k);
                kinds_span = Some(r.span);
            }
            "on_panic" => {
                let s = string(r)?;
                o.on_panic_fail = match s.value().as_str() {
                    "fail" => Some(true),
                    "report" => Some(false),
                    other => {
                        return Err(syn::Error::new_spanned(
                            &s,
                            format!("unknown on_panic `{other}`: expected \"report\" (print the leaks after the panic) or \"fail\" (a leak fails the `#[should_panic]` test)"),
                        ))
                    }
                };
                on_panic_span = Some(r.span);
            }
            "crate" => {
                let s = string(r)?;
                if s.value()
                    .rsplit("::")
                    .next()
                    .is_some_and(|l| l.contains("tokio"))
                {
                    return Err(syn::Error::new_spanned(
                        &s,
                        "`crate` is the path to leakcheck, not to tokio (leakcheck builds the test's runtime with its own tokio): drop it, or write the path to leakcheck, for example \"::leakcheck\"",
                    ));
                }
                o.krate = Some(s.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new_spanned(
                        &s,
                        "`crate` must be a path, for example \"::leakcheck\"",
                    )
                })?);
            }
            _ => unreachable!("collect() admits only KEYS"),
        }
    }

    // Combinations.
    if !target.is_async {
        for (span, what) in [
            (flavor_span, "flavor"),
            (workers_span, "worker_threads"),
            (paused_span, "start_paused"),
            (unhandled_span, "unhandled_panic"),
        ] {
            if let Some(span) = span {
                return Err(syn::Error::new(
                    span,
                    format!("`{what}` configures the test's runtime: it needs an `async fn` (a synchronous test has no runtime)"),
                ));
            }
        }
        if let (Some(span), Some([true, ..])) = (kinds_span, o.kinds) {
            return Err(syn::Error::new(
                span,
                "`kinds` includes \"tasks\", but a synchronous test has no runtime: make it an `async fn` or drop \"tasks\"",
            ));
        }
    }
    if let (Some(span), false) = (on_panic_span, target.should_panic) {
        return Err(syn::Error::new(
            span,
            "`on_panic` decides whether a leak fails a `#[should_panic]` test: this test has no `#[should_panic]` (any other test that panics fails anyway)",
        ));
    }
    if let (Some(span), false) = (workers_span, o.multi_thread) {
        return Err(syn::Error::new(
            span,
            "`worker_threads` needs `flavor = \"multi_thread\"` (the default flavor is \"current_thread\")",
        ));
    }
    if let (Some(span), true) = (unhandled_span, o.multi_thread) {
        return Err(syn::Error::new(
            span,
            "`unhandled_panic` needs `flavor = \"current_thread\"`: tokio shuts a runtime down on a task's panic only on a current-thread runtime",
        ));
    }
    if let (Some(span), true, true) = (paused_span, o.start_paused, o.multi_thread) {
        return Err(syn::Error::new(
            span,
            "`start_paused = true` needs `flavor = \"current_thread\"`: tokio pauses time only on a current-thread runtime",
        ));
    }
    Ok(o)
}

fn value_span(r: &Raw) -> Span {
    r.value.as_ref().map_or(r.span, |v| v.span())
}

fn lit<'a>(r: &'a Raw, expected: &str) -> syn::Result<&'a Lit> {
    match &r.value {
        Some(Expr::Lit(l)) => Ok(&l.lit),
        Some(other) => Err(syn::Error::new_spanned(
            other,
            format!("`{}` expects {expected}", r.key),
        )),
        None => Err(syn::Error::new(
            r.span,
            format!("`{}` needs a value: write `{} = {expected}`", r.key, r.key),
        )),
    }
}

fn string(r: &Raw) -> syn::Result<syn::LitStr> {
    match lit(r, "a string literal")? {
        Lit::Str(s) => Ok(s.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` expects a string literal", r.key),
        )),
    }
}

fn int(r: &Raw) -> syn::Result<u64> {
    match lit(r, "an integer literal")? {
        Lit::Int(i) => i.base10_parse::<u64>(),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` expects an integer literal", r.key),
        )),
    }
}

fn boolean(r: &Raw) -> syn::Result<bool> {
    match lit(r, "`true` or `false`")? {
        Lit::Bool(b) => Ok(b.value),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{}` expects `true` or `false`", r.key),
        )),
    }
}

fn strings(r: &Raw) -> syn::Result<Vec<syn::LitStr>> {
    let expected = format!(
        "an array of string literals, for example `{} = [\"...\"]`",
        r.key
    );
    let Some(Expr::Array(a)) = &r.value else {
        return Err(match &r.value {
            Some(v) => syn::Error::new_spanned(v, format!("`{}` expects {expected}", r.key)),
            None => syn::Error::new(r.span, format!("`{}` needs a value: {expected}", r.key)),
        });
    };
    a.elems
        .iter()
        .map(|e| match e {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok(s.clone()),
            other => Err(syn::Error::new_spanned(
                other,
                format!("`{}` expects {expected}", r.key),
            )),
        })
        .collect()
}

/// `"500ms"`, `"2s"`, `"1m"` in milliseconds.
fn duration_ms(r: &Raw) -> syn::Result<u64> {
    let s = string(r).map_err(|_| {
        syn::Error::new(
            value_span(r),
            format!(
                "`{}` expects a duration string such as \"500ms\" or \"2s\"",
                r.key
            ),
        )
    })?;
    let v = s.value();
    let v = v.trim();
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: Option<u64> = digits.parse().ok();
    let factor = match unit.trim() {
        "ms" => Some(1),
        "s" => Some(1000),
        "m" => Some(60_000),
        _ => None,
    };
    match (n, factor) {
        (Some(n), Some(f)) => Ok(n * f),
        _ => Err(syn::Error::new_spanned(
            &s,
            format!(
                "`{}` = {v:?} is not a duration: write a whole number and a unit, ms, s or m (\"500ms\", \"2s\")",
                r.key
            ),
        )),
    }
}
