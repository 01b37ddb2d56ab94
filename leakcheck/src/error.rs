//! Errors of the engine. Messages are lowercase fragments that read after "failed to ...".
//!
//! A message quotes what someone wrote (a variable's value, a rule's name or regex, a line of
//! `leakcheck.toml`) only through [`excerpt`], [`excerpt_ends`] or [`pointer`]: a 10 MB value
//! gives a message of a few hundred bytes that still says where the problem is.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a check could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds a value that does not parse.
    #[error("read environment variable {var}={:?}: {reason}", excerpt(value))]
    Env {
        /// The variable, for example `LEAKCHECK_SETTLE_MS`.
        var: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// The rules file could not be read.
    #[error("read rules file {}: {source}", shown_path(path))]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The rules file is not valid TOML, holds an unknown key or an invalid setting, or defines
    /// two rules of one name.
    #[error("parse rules file {}: {message}", shown_path(path))]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong: the key (`settings.kinds`), or the line and column with an excerpt of
        /// the line.
        message: String,
    },
    /// A rule is invalid: a bad regex, an empty rule, a missing reason, a key its kind never
    /// has, a name another rule has.
    #[error("build rule `{}`{}: {reason}", excerpt(rule), origin.as_ref().map(|o| format!(" (from {})", excerpt_ends(o))).unwrap_or_default())]
    Rule {
        /// The rule's name.
        rule: String,
        /// Where the rule came from (a file path and the rule's place in it), if not from code.
        origin: Option<String>,
        /// What is wrong, naming the key and the value.
        reason: String,
    },
    /// A setting given in code makes the check meaningless (no kind to check).
    #[error("configure {setting}: {reason}")]
    Setting {
        /// The setter, for example `CheckBuilder::kinds`.
        setting: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The instrumented runtime could not be built.
    #[error("build the instrumented tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// At most this many characters of a value, a name or a line someone wrote are quoted in an
/// error message.
pub(crate) const EXCERPT_CHARS: usize = 120;

/// `s` as an error message quotes it: whole when it has at most [`EXCERPT_CHARS`] characters,
/// else its first [`EXCERPT_CHARS`] characters, an ellipsis and its length. `{}` shows it bare,
/// `{:?}` quoted (the note of the length stays outside the quotes).
pub(crate) fn excerpt(s: &str) -> Excerpt<'_> {
    match s.char_indices().nth(EXCERPT_CHARS) {
        None => Excerpt {
            head: s,
            tail: None,
            len: s.len(),
        },
        Some((cut, _)) => Excerpt {
            head: &s[..cut],
            tail: Some(""),
            len: s.len(),
        },
    }
}

/// As [`excerpt`], but keeps the end too (the first and the last [`EXCERPT_CHARS`] characters):
/// for paths, whose file name is at the end, and messages that end with what was expected.
pub(crate) fn excerpt_ends(s: &str) -> Excerpt<'_> {
    let head = match s.char_indices().nth(EXCERPT_CHARS) {
        None => {
            return Excerpt {
                head: s,
                tail: None,
                len: s.len(),
            }
        }
        Some((cut, _)) => cut,
    };
    let tail = s
        .char_indices()
        .rev()
        .nth(EXCERPT_CHARS - 1)
        .map_or(0, |(i, _)| i)
        .max(head);
    if tail == head {
        return Excerpt {
            head: s,
            tail: None,
            len: s.len(),
        };
    }
    Excerpt {
        head: &s[..head],
        tail: Some(&s[tail..]),
        len: s.len(),
    }
}

/// A bounded quote of a string: see [`excerpt`].
#[derive(Clone, Copy)]
pub(crate) struct Excerpt<'a> {
    head: &'a str,
    /// `None`: `head` is the whole string; `Some(end)`: it was cut, `end` is kept after the cut.
    tail: Option<&'a str>,
    /// The whole string's length in bytes.
    len: usize,
}

impl Excerpt<'_> {
    fn note(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "… ({} bytes in all)", self.len)
    }
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.head)?;
        if let Some(tail) = self.tail {
            self.note(f)?;
            if !tail.is_empty() {
                write!(f, " …{tail}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.head)?;
        if let Some(tail) = self.tail {
            self.note(f)?;
            if !tail.is_empty() {
                write!(f, " …{tail:?}")?;
            }
        }
        Ok(())
    }
}

fn shown_path(path: &Path) -> String {
    excerpt_ends(&path.display().to_string()).to_string()
}

/// Where byte `offset` of `text` is, for a message: its line and column (from 1, in characters)
/// and a drawing of the line (at most [`EXCERPT_CHARS`] characters of it, around the offset) with
/// `len` carets under what is wrong, in the layout of rustc and the toml crate.
pub(crate) struct Pointer {
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// `  |\n3 | the line\n  |     ^^^`, without a trailing newline.
    pub(crate) drawing: String,
}

/// See [`Pointer`]. An `offset` past the end points just after the last character.
pub(crate) fn pointer(text: &str, offset: usize, len: usize) -> Pointer {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..line_start].matches('\n').count() + 1;
    let rel = (offset - line_start).min(line_text.len());
    let chars_before = line_text[..rel].chars().count();
    let column = chars_before + 1;

    // A window of the line: up to half the excerpt before the offset, the rest after it.
    let skip = chars_before.saturating_sub(EXCERPT_CHARS / 2);
    let start = line_text.char_indices().nth(skip).map_or(rel, |(i, _)| i);
    let end = line_text[start..]
        .char_indices()
        .nth(EXCERPT_CHARS)
        .map_or(line_text.len(), |(i, _)| start + i);
    let mut shown = String::new();
    let mut caret_at = chars_before - skip;
    if start > 0 {
        shown.push('…');
        caret_at += 1;
    }
    shown.push_str(&line_text[start..end]);
    let shown_chars = shown.chars().count();
    if end < line_text.len() {
        shown.push('…');
    }
    let carets = len.max(1).min(shown_chars.saturating_sub(caret_at).max(1));
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    let drawing = format!(
        "{gutter} |\n{number} | {shown}\n{gutter} | {}{}",
        " ".repeat(caret_at),
        "^".repeat(carets)
    );
    Pointer {
        line,
        column,
        drawing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_string_is_quoted_whole() {
        assert_eq!(excerpt("abc").to_string(), "abc");
        assert_eq!(format!("{:?}", excerpt("a\"b")), r#""a\"b""#);
        assert_eq!(excerpt_ends("abc").to_string(), "abc");
        let s = "é".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&s).to_string(), s);
    }

    #[test]
    fn a_long_string_is_cut_with_its_length() {
        let s = "x".repeat(10_000_000);
        let e = excerpt(&s).to_string();
        assert_eq!(e, format!("{}… (10000000 bytes in all)", "x".repeat(120)));
        let e = format!("{:?}", excerpt(&s));
        assert!(
            e.starts_with("\"xxx") && e.ends_with("\"… (10000000 bytes in all)"),
            "{e}"
        );
        let s = format!("unknown field `{}`, expected `name`", "é".repeat(5000));
        let e = excerpt_ends(&s).to_string();
        assert!(e.starts_with("unknown field `éé"), "{e}");
        assert!(e.ends_with("é`, expected `name`"), "{e}");
        assert!(
            e.contains(&format!("… ({} bytes in all) …", s.len())),
            "{e}"
        );
        assert!(e.chars().count() < 300, "{e}");
    }

    #[test]
    fn a_pointer_draws_a_bounded_window_around_the_offset() {
        let p = pointer("a = 1\nb = [\n", 10, 1);
        assert_eq!((p.line, p.column), (2, 5));
        assert_eq!(p.drawing, "  |\n2 | b = [\n  |     ^");

        let line = format!("{}X{}", "a".repeat(5_000_000), "b".repeat(5_000_000));
        let p = pointer(&line, 5_000_000, 3);
        assert_eq!((p.line, p.column), (1, 5_000_001));
        assert!(p.drawing.len() < 400, "{}", p.drawing);
        let lines: Vec<&str> = p.drawing.lines().collect();
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('X'), "{}", p.drawing);
        assert!(lines[1].starts_with("1 | …aaa") && lines[1].ends_with("bbb…"));
        assert!(lines[2].ends_with("^^^"));

        let p = pointer("abc", 99, 1);
        assert_eq!((p.line, p.column), (1, 4));
        assert_eq!(p.drawing, "  |\n1 | abc\n  |    ^");
    }
}
