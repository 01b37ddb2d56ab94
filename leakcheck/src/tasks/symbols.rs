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

/// Resolves instruction pointers, caching each one.
#[derive(Default)]
pub(crate) struct Symbolizer {
    cache: FxHashMap<usize, Vec<Frame>>,
}

impl Symbolizer {
    /// Resolves return addresses (innermost first) to frames; inlined calls expand to several.
    pub(crate) fn resolve(&mut self, ips: &[usize]) -> Vec<Frame> {
        let mut out = Vec::with_capacity(ips.len());
        for &ip in ips {
            let frames = self.cache.entry(ip).or_insert_with(|| resolve_one(ip));
            out.extend(frames.iter().cloned());
        }
        out
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
