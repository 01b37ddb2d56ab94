//! Symbol resolution for survivors only, each distinct address once.

use rustc_hash::FxHashMap;

/// One resolved stack frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    /// Demangled function path without the hash suffix.
    pub function: String,
    /// Source file, as recorded in the debug info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Frame {
    /// `function at file:line`, the text that frame rules match.
    pub fn display(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{} at {f}:{l}", self.function),
            (Some(f), None) => format!("{} at {f}", self.function),
            _ => self.function.clone(),
        }
    }

    /// Whether the frame belongs to the runtime machinery rather than to the code that spawned.
    pub(crate) fn is_runtime(&self) -> bool {
        self.origin() == Origin::Runtime
    }

    /// Whose code the frame is: the runtime's (tokio, the standard library, `core`'s poll
    /// adapters, leakcheck's hook), a library's (a registry crate), or the user's (the
    /// workspace under test). Decided by the function and by the file, so that it stays right
    /// when one of them is missing or misleading (a macro expansion, `line-tables-only`).
    pub(crate) fn origin(&self) -> Origin {
        if is_runtime_function(&self.function) {
            return Origin::Runtime;
        }
        let Some(file) = self.file.as_deref() else {
            // An address no symbol covers (the end of a thread's stack, stripped code) is
            // nobody's line.
            if self.function.starts_with("0x") {
                return Origin::Runtime;
            }
            return Origin::User;
        };
        let file = file.replace('\\', "/");
        if file.starts_with("/rustc/")
            || ["/library/core/", "/library/std/", "/library/alloc/"]
                .iter()
                .any(|p| file.contains(p))
            || own_source(&file)
        {
            return Origin::Runtime;
        }
        if crate::component::is_library_path(&file) {
            let krate = crate::component::of_path(&file);
            if RUNTIME_CRATES.contains(&krate.as_str()) {
                return Origin::Runtime;
            }
            return Origin::Library(krate);
        }
        Origin::User
    }
}

/// Whose code a frame is (see [`Frame::origin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Runtime,
    /// A dependency, by package name.
    Library(String),
    User,
}

/// Crates whose frames are the runtime's machinery, never a library the user called.
const RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "futures-util",
    "futures-core",
    "backtrace",
    "tracing",
    "tracing-futures",
    "leakcheck",
    "leakcheck-macros",
    // The plumbing under tokio's sockets and signals: who called tokio is the one to name.
    "mio",
    "socket2",
    "signal-hook-registry",
];

/// Whether `file` is one of leakcheck's own sources (its spawn hook, its harness). In an
/// optimized build their frames often carry a bare function name (`stack`, `pthread_create`),
/// so the file is what tells them apart.
fn own_source(file: &str) -> bool {
    // `file!()` of this file: `leakcheck/src/tasks/symbols.rs` in its workspace, an absolute
    // registry path elsewhere. Frames inside the workspace under test are made relative to it
    // (`relative`), but a binary run outside its workspace (from `/`, from an archive) keeps
    // them absolute, as compiled: under `CARGO_MANIFEST_DIR`.
    static OWN_SRC: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let own = OWN_SRC.get_or_init(|| {
        let me = file!().replace('\\', "/");
        let relative = me
            .strip_suffix("tasks/symbols.rs")
            .unwrap_or(&me)
            .to_string();
        let absolute = format!("{}/src/", env!("CARGO_MANIFEST_DIR").replace('\\', "/"));
        [relative, absolute]
    });
    // From a registry, the crate is `leakcheck`, which `RUNTIME_CRATES` names.
    own.iter().any(|o| file.starts_with(o.as_str()))
}

/// The first frame of the user's own code in a spawn backtrace (innermost first), and the
/// outermost library frame below it: the library function the user called, which spawned.
/// A frame without a file (a binary or a C library without line tables) cannot be told from a
/// library's, so it names nobody's line.
pub(crate) fn user_and_via(frames: &[Frame]) -> (Option<&Frame>, Option<&Frame>) {
    let Some(i) = frames
        .iter()
        .position(|f| f.file.is_some() && f.origin() == Origin::User)
    else {
        return (None, None);
    };
    let via = frames[..i]
        .iter()
        .rev()
        .find(|f| matches!(f.origin(), Origin::Library(_)));
    (Some(&frames[i]), via)
}

pub(crate) fn is_runtime_function(f: &str) -> bool {
    if is_generic_adapter(f) {
        return true;
    }
    const RUNTIME: &[&str] = &[
        "tokio::",
        "std::",
        "core::",
        "alloc::",
        "leakcheck::",
        "backtrace::",
        "futures_util::",
        "futures_core::",
        "__rust",
        "_start",
        "__libc",
        "start_thread",
        "clone3",
        "tracing::",
        "tracing_futures::",
        // libtest, the harness: its frames have no file in a binary without line tables.
        "test::",
    ];
    let f = f.trim_start_matches('<').trim_start_matches('&');
    RUNTIME.iter().any(|p| f.starts_with(p))
}

/// `<&mut F as core::future::future::Future>::poll`, `<core::pin::Pin<P> as ...>::poll`,
/// `<alloc::boxed::Box<F> as ...>::poll`: the standard library's impls for wrappers of a generic
/// type, which forward to the code inside and are never the user's own.
fn is_generic_adapter(f: &str) -> bool {
    let Some(rest) = f.strip_prefix('<') else {
        return false;
    };
    let Some((self_ty, tr)) = rest.split_once(" as ") else {
        return false;
    };
    let runtime_trait = [
        "core::",
        "std::",
        "alloc::",
        "futures_core::",
        "futures_util::",
    ]
    .iter()
    .any(|p| tr.starts_with(p));
    let ty = self_ty
        .trim_start_matches('&')
        .trim_start_matches("mut ")
        .trim_start_matches("dyn ");
    let generic = ty.len() <= 2 && ty.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    let wrapper = ["core::pin::Pin<", "alloc::boxed::Box<", "Pin<", "Box<"]
        .iter()
        .any(|p| ty.starts_with(p));
    runtime_trait && (generic || wrapper)
}

/// `path` relative to the workspace root (the nearest ancestor of the current directory with a
/// `Cargo.lock`) when it lies inside it, as spawn locations are.
pub(crate) fn relative(path: &std::path::Path) -> String {
    match workspace_root().and_then(|r| path.strip_prefix(r).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
}

/// The workspace under test: the nearest ancestor of the current directory with a `Cargo.lock`
/// (cargo runs tests and examples in their package's directory).
pub(crate) fn workspace_root() -> Option<&'static std::path::Path> {
    static ROOT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors()
            .find(|d| d.join("Cargo.lock").is_file())
            .map(|d| d.to_path_buf())
    })
    .as_deref()
}

/// Resolved frames per instruction pointer, for the whole process: the tenth failing check
/// pays no resolution an earlier one paid.
static CACHE: std::sync::Mutex<Option<FxHashMap<usize, Vec<Frame>>>> = std::sync::Mutex::new(None);

/// Resolves return addresses (innermost first) to frames; inlined calls expand to several. Each
/// address is resolved once per process.
pub(crate) fn resolve(ips: &[usize]) -> Vec<Frame> {
    let mut out = Vec::with_capacity(ips.len());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(FxHashMap::default);
    for &ip in ips {
        let frames = cache.entry(ip).or_insert_with(|| resolve_one(ip));
        out.extend(frames.iter().cloned());
    }
    out
}

/// Resolves survivors' frames into the cache on a thread of leakcheck's own while the check
/// waits for its deadline. The first resolution of a process loads debug info (the binary's, and
/// libc's detached, compressed one when installed): hundreds of milliseconds in a debug build,
/// which would otherwise come after the wait. Dropping it stops and joins the thread: it never
/// outlives its check's settling, and is waited for at most while it resolves one address.
pub(crate) struct Prefetch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts resolving the addresses of `stacks` (each address once; cached ones cost a lookup).
pub(crate) fn prefetch(stacks: Vec<std::sync::Arc<[usize]>>) -> Option<Prefetch> {
    use std::sync::atomic::Ordering::Relaxed;
    if stacks.is_empty() {
        return None;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = crate::process::spawn_own(crate::process::SYMBOLS_THREAD_NAME, move || {
        // What loading opens (the binary, /proc/self/maps, debug files) is leakcheck's own.
        crate::process::unrecorded(|| {
            let mut seen = rustc_hash::FxHashSet::default();
            for ip in stacks.iter().flat_map(|s| s.iter().copied()) {
                if stopped.load(Relaxed) {
                    return;
                }
                if seen.insert(ip) {
                    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
                    cache
                        .get_or_insert_with(FxHashMap::default)
                        .entry(ip)
                        .or_insert_with(|| resolve_one(ip));
                }
            }
        })
    })
    .ok()?;
    Some(Prefetch {
        stop,
        thread: Some(thread),
    })
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn resolve_one(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    // A return address points after the call; look up the call itself.
    backtrace::resolve(ip.saturating_sub(1) as *mut _, |sym| {
        frames.push(Frame {
            function: sym
                .name()
                .map(|n| format!("{n:#}"))
                .unwrap_or_else(|| format!("{ip:#x}")),
            file: sym.filename().map(relative),
            line: sym.lineno(),
        })
    });
    if frames.is_empty() {
        frames.push(Frame {
            function: format!("{ip:#x}"),
            file: None,
            line: None,
        });
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>) -> Frame {
        Frame {
            function: function.into(),
            file: file.map(str::to_string),
            line: Some(1),
        }
    }

    #[inline(never)]
    fn here() -> Vec<usize> {
        let frames = crate::tasks::capture::capture();
        std::hint::black_box(&frames);
        frames
    }

    #[test]
    fn a_prefetch_fills_the_cache_and_stops_when_dropped() {
        let ips = here();
        let p = prefetch(vec![ips.clone().into()]).expect("a helper thread");
        let cached = || {
            let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .as_ref()
                .is_some_and(|c| ips.iter().all(|ip| c.contains_key(ip)))
        };
        let t = std::time::Instant::now();
        while !cached() && t.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(cached(), "not resolved after {:?}", t.elapsed());
        // Joined: nothing of it runs after this.
        drop(p);
        // Resolved as it would have been here.
        assert!(resolve(&ips).iter().any(|f| f.function.ends_with("::here")));
    }

    #[test]
    fn poll_adapters_macros_and_the_hook_are_never_user_code() {
        for (f, file) in [
            ("<&mut F as core::future::future::Future>::poll", None),
            (
                "<core::pin::Pin<P> as core::future::future::Future>::poll",
                None,
            ),
            (
                "<alloc::boxed::Box<F> as core::future::future::Future>::poll",
                None,
            ),
            (
                "{{closure}}",
                Some("/rustc/abc/library/core/src/future/mod.rs"),
            ),
            (
                "app::main::{{closure}}",
                Some(
                    "/root/.cargo/registry/src/index.crates.io-1/tokio-1.54.1/src/macros/select.rs",
                ),
            ),
            ("leakcheck::tasks::instrument::{{closure}}", None),
            ("on_spawn", Some(file!())),
        ] {
            assert_eq!(frame(f, file).origin(), Origin::Runtime, "{f} {file:?}");
        }
        // The hook's frames of an optimized binary run outside its workspace: a bare name, and
        // the file as compiled.
        let hook = format!("{}/src/process/origins.rs", env!("CARGO_MANIFEST_DIR"));
        for (f, file) in [
            ("stack", Some(hook.as_str())),
            ("pthread_create", Some(&hook)),
        ] {
            assert_eq!(frame(f, file).origin(), Origin::Runtime, "{f} {file:?}");
        }
    }

    #[test]
    fn libraries_and_the_users_frame() {
        let frames = [
            frame("tokio::task::spawn::spawn", None),
            frame(
                "<hyper_util::rt::tokio::TokioExecutor as hyper::rt::Executor<Fut>>::execute",
                Some("/root/.cargo/registry/src/index.crates.io-1/hyper-util-0.1.10/src/rt/tokio.rs"),
            ),
            frame(
                "hyper_util::client::legacy::Client::request",
                Some("/root/.cargo/registry/src/index.crates.io-1/hyper-util-0.1.10/src/client/legacy/client.rs"),
            ),
            frame("app::api::fetch::{{closure}}", Some("src/api.rs")),
            frame("app::main", Some("src/main.rs")),
        ];
        assert_eq!(frames[1].origin(), Origin::Library("hyper-util".into()));
        let (user, via) = user_and_via(&frames);
        assert_eq!(user.unwrap().function, "app::api::fetch::{{closure}}");
        assert_eq!(
            via.unwrap().function,
            "hyper_util::client::legacy::Client::request"
        );
        assert_eq!(user_and_via(&frames[..3]), (None, None));
        // Without line tables every frame lacks its file: none is taken for the user's line, a
        // library's least of all.
        let bare: Vec<Frame> = frames
            .iter()
            .map(|f| Frame {
                file: None,
                line: None,
                ..f.clone()
            })
            .collect();
        assert_eq!(user_and_via(&bare), (None, None));
        // A C library's frame without a file is skipped on the way to the user's.
        let through_c = [
            frame("rd_kafka_new", None),
            frame("app::connect", Some("src/kafka.rs")),
        ];
        assert_eq!(user_and_via(&through_c).0.unwrap().function, "app::connect");
        // A user type's own Future impl is user code.
        assert_eq!(
            frame(
                "<app::Conn as core::future::future::Future>::poll",
                Some("src/conn.rs")
            )
            .origin(),
            Origin::User
        );
    }
}
