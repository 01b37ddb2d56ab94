//! One JSON report per check in the report directory, for CI artifacts and tools.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::Report;
use crate::config::{ReportDir, DEFAULT_REPORT_DIR};

/// Writes `report` as `<dir>/<label>.json`, in place: an existing report's file is rewritten
/// rather than replaced, because replacing a file makes the file system free its blocks, which
/// costs 0.1 to 1 ms a test on ext4 (most of a clean check). A reader during a run may therefore
/// see a report being rewritten. A failure to write is printed, never fatal: the verdict does
/// not depend on the file.
pub(crate) fn write_json(report: &Report, dir: &ReportDir) -> Option<PathBuf> {
    let dir = match dir {
        ReportDir::Off => return None,
        ReportDir::Path(p) => p.clone(),
        ReportDir::Target => {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            DIR.get_or_init(|| target_dir().join(DEFAULT_REPORT_DIR))
                .clone()
        }
    };
    let path = dir.join(format!("{}.json", file_stem(report.label.as_deref())));
    let json = report.to_json();
    // Unrecorded: the next check may take the end state of the last one as its baseline as
    // long as no descriptor was made meanwhile (see `process::made`); this one is leakcheck's.
    let written = create_dir_once(&dir)
        .and_then(|()| crate::process::unrecorded(|| write_in_place(&path, &json)));
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!(
                "leakcheck: could not write the JSON report {}: {e} (set LEAKCHECK_REPORT_DIR to a writable directory, or `off`)",
                path.display()
            );
            None
        }
    }
}

fn write_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let meta = f.metadata()?;
    // Declared after `f`, dropped before it: marked only while open. (A scan in between
    // reads the target, and knows the report by its path.)
    let _own = crate::process::OwnFd::new(&f, &meta);
    let before = meta.len();
    f.write_all(text.as_bytes())?;
    // Truncating costs a metadata update: only when the last report was longer.
    if before > text.len() as u64 {
        f.set_len(text.len() as u64)?;
    }
    Ok(())
}

/// The report directories this process writes to, as given and as the kernel names them.
static DIRS: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// `create_dir_all`, once per directory; remembers the directory's real path.
fn create_dir_once(dir: &Path) -> std::io::Result<()> {
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if !dirs.iter().any(|(d, _)| d == dir) {
        std::fs::create_dir_all(dir)?;
        let real = std::fs::canonicalize(dir)?.display().to_string();
        dirs.push((dir.to_path_buf(), real));
    }
    Ok(())
}

/// Whether a descriptor's target is a JSON report of this process's report directories:
/// checks running while another writes its report never count that file.
pub(crate) fn is_report_being_written(target: &str) -> bool {
    let Some(stem) = target.strip_suffix(".json") else {
        return false;
    };
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(_, real)| {
            stem.strip_prefix(real.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/'))
        })
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the one holding this test binary
/// (`<target>/<profile>/deps/<binary>`), else `target` next to the nearest `Cargo.lock` above
/// the current directory (doctests run from a temporary directory), else the temporary
/// directory.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent()?.parent().map(Path::to_path_buf))
        .or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            let root = cwd.ancestors().find(|d| d.join("Cargo.lock").is_file())?;
            Some(root.join("target"))
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// A file name for a label: `crate::module::test` becomes `crate.module.test`; anything but
/// letters, digits, `-`, `_` and `.` becomes `_`.
fn file_stem(label: Option<&str>) -> String {
    let Some(label) = label.filter(|l| !l.trim().is_empty()) else {
        return format!("unlabeled-{}", std::process::id());
    };
    label
        .replace("::", ".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_being_written_is_never_counted_as_a_descriptor() {
        let dir = std::env::temp_dir().join(format!("leakcheck-open-{}", std::process::id()));
        create_dir_once(&dir).unwrap();
        let report = dir.join("m.t.json");
        let nested = dir.join("sub");
        std::fs::create_dir_all(&nested).unwrap();
        let other = nested.join("user.json");
        let _a = std::fs::File::create(&report).unwrap();
        let _b = std::fs::File::create(&other).unwrap();
        let targets: Vec<String> = crate::process::fds()
            .into_iter()
            .map(|f| f.target)
            .collect();
        assert!(
            !targets.iter().any(|t| t.ends_with("m.t.json")),
            "{targets:?}"
        );
        // A file in a folder below, or elsewhere, is the test's.
        assert!(
            targets.iter().any(|t| t.ends_with("user.json")),
            "{targets:?}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_shorter_report_rewritten_in_place_leaves_no_tail() {
        let dir = std::env::temp_dir().join(format!("leakcheck-rewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        write_in_place(&path, "{\"a\": \"a long first version\"}").unwrap();
        write_in_place(&path, "{}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn test_paths_become_file_names() {
        assert_eq!(
            file_stem(Some("it::corpus::leaky_pool")),
            "it.corpus.leaky_pool"
        );
        assert_eq!(file_stem(Some("a b/c")), "a_b_c");
        assert!(file_stem(None).starts_with("unlabeled-"));
    }

    #[test]
    fn writes_the_report_and_reports_failures_without_panicking() {
        let dir = std::env::temp_dir().join(format!("leakcheck-reports-{}", std::process::id()));
        let report = Report {
            label: Some("m::t".into()),
            ..Report::empty_for_tests()
        };
        let path = write_json(&report, &ReportDir::Path(dir.clone())).unwrap();
        assert_eq!(path, dir.join("m.t.json"));
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["label"], "m::t");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write_json(&report, &ReportDir::Path("/proc/no-such-dir".into())).is_none());
        assert!(write_json(&report, &ReportDir::Off).is_none());
    }
}
