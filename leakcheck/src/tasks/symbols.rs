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
        is_runtime_function(&self.function)
    }
}

pub(crate) fn is_runtime_function(f: &str) -> bool {
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
    ];
    let f = f.trim_start_matches('<').trim_start_matches('&');
    RUNTIME.iter().any(|p| f.starts_with(p))
}

/// `path` relative to the workspace root (the nearest ancestor of the current directory with a
/// `Cargo.lock`) when it lies inside it, as spawn locations are.
pub(crate) fn relative(path: &std::path::Path) -> String {
    static ROOT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().ok()?;
        cwd.ancestors()
            .find(|d| d.join("Cargo.lock").is_file())
            .map(|d| d.to_path_buf())
    });
    match root.as_deref().and_then(|r| path.strip_prefix(r).ok()) {
        Some(rel) => rel.display().to_string(),
        None => path.display().to_string(),
    }
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

/// Loads the debug info symbol resolution needs (tens of milliseconds in a release build, up to
/// a second in a debug build) on a thread of leakcheck's own, once per process, so that a check
/// that found a survivor does it while it waits for the deadline rather than after.
pub(crate) fn warm_up() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let ip = warm_up as fn() as usize;
        let _ = crate::process::spawn_own("leakcheck-symbols", move || {
            let _ = resolve(&[ip + 1]);
        });
    });
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
