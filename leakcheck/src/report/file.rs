//! One JSON report per check in the report directory, for CI artifacts and tools.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::Report;
use crate::config::{ReportDir, DEFAULT_REPORT_DIR};

/// Writes `report` as `<dir>/<label>.json` (written to a temporary file, then renamed, so a
/// reader never sees half a report). A failure to write is printed, never fatal: the verdict
/// does not depend on the file.
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
    let tmp = path.with_extension(&temp_suffix()[1..]);
    let written = create_dir_once(&dir)
        .and_then(|()| std::fs::write(&tmp, report.to_json()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "leakcheck: could not write the JSON report {}: {e} (set LEAKCHECK_REPORT_DIR to a writable directory, or `off`)",
                path.display()
            );
            None
        }
    }
}

/// `create_dir_all`, skipped for a directory this process already created.
/// `.json.<pid>.tmp`: the end of the name of a report while this process writes it.
fn temp_suffix() -> &'static str {
    static SUFFIX: OnceLock<String> = OnceLock::new();
    SUFFIX.get_or_init(|| format!(".json.{}.tmp", std::process::id()))
}

/// Whether a descriptor's target is a JSON report this process is writing: checks that run
/// meanwhile never count it.
pub(crate) fn is_report_being_written(target: &str) -> bool {
    target.ends_with(temp_suffix())
}

fn create_dir_once(dir: &Path) -> std::io::Result<()> {
    static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
    if !created.iter().any(|d| d == dir) {
        std::fs::create_dir_all(dir)?;
        created.push(dir.to_path_buf());
    }
    Ok(())
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
        let dir = std::env::temp_dir();
        let tmp = dir.join(format!("leakcheck-open{}", temp_suffix()));
        let other = dir.join(format!("leakcheck-open-{}.json", std::process::id()));
        let _a = std::fs::File::create(&tmp).unwrap();
        let _b = std::fs::File::create(&other).unwrap();
        let targets: Vec<String> = crate::process::fds()
            .into_iter()
            .map(|f| f.target)
            .collect();
        assert!(
            !targets.iter().any(|t| t.ends_with(temp_suffix())),
            "{targets:?}"
        );
        assert!(targets.iter().any(|t| t.ends_with(".json")), "{targets:?}");
        let _ = std::fs::remove_file(tmp);
        let _ = std::fs::remove_file(other);
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
