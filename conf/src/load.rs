//! Loading a topology file: TOML syntax, the schema, then semantic validation, reporting every error found
//! with file, line, column, key path and what was expected.
//!
//! Schema errors are collected by deserializing repeatedly: each pass stops at its first error, which is
//! recorded; the offending value is removed from the tree and the next pass goes on. A "missing key" that only
//! exists because we removed that key is not reported again; the table holding it goes instead. Semantic
//! validation then runs on what deserialized, so one run shows unknown keys, bad values and rule violations
//! together.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use crate::model::Topology;
use crate::tree::{Ctx, De, KeyPath, Node, Seg};
use crate::validate;

/// One error in a topology file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Key path such as `services[1].vip`; empty for syntax errors.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error of one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Reads and loads a topology file.
pub fn load_file(path: &Path) -> Result<Topology, Diagnostics> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => load_str(&src, &file),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            file,
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Loads a topology from text; `file` names it in diagnostics.
pub fn load_str(src: &str, file: &str) -> Result<Topology, Diagnostics> {
    let lines = LineIndex::new(src);
    let diag = |span: Range<usize>, path: &KeyPath, message: String| {
        let (line, column) = lines.position(src, span.start);
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            path: path.to_string(),
            message,
        }
    };

    let (doc, syntax) = toml::de::DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        let out = syntax
            .iter()
            .map(|e| {
                let msg = e.message().trim().to_owned();
                diag(
                    e.span().unwrap_or(0..0),
                    &KeyPath::default(),
                    format!("TOML syntax: {msg}"),
                )
            })
            .collect();
        return Err(Diagnostics(out));
    }
    let mut tree = Node::from_table(&doc);

    let mut found: Vec<(Range<usize>, KeyPath, String)> = Vec::new();
    let mut removed: Vec<KeyPath> = Vec::new();
    let mut topology = None;
    // Each failed pass removes one value, so the loop ends; the bound is a second guard.
    for _ in 0..10_000 {
        let ctx = Ctx::default();
        let result = Topology::deserialize(De::root(&tree, &ctx));
        for u in ctx.unknown.take() {
            if !found.iter().any(|(s, p, _)| *s == u.span && *p == u.path) {
                let msg = format!("unknown key; expected one of: {}", u.expected.join(", "));
                found.push((u.span, u.path, msg));
            }
        }
        match result {
            Ok(t) => {
                topology = Some(t);
                break;
            }
            Err(e) => {
                let path = e.path.unwrap_or_default();
                let ours = e.missing.is_some_and(|k| removed.contains(&path.with(k)));
                if !ours {
                    found.push((e.span.unwrap_or(0..0), path.clone(), e.message));
                }
                if path.0.is_empty() || !tree.remove(&path.0) {
                    break;
                }
                removed.push(path);
            }
        }
    }

    if let Some(t) = &topology {
        let nodes_removed = removed
            .iter()
            .any(|p| p.0.first() == Some(&Seg::Key("nodes".into())));
        for issue in validate::validate(t, !nodes_removed) {
            let (shown, span) = tree.locate(&issue.path);
            found.push((span, shown, issue.message));
        }
    }

    found.sort_by_key(|(span, _, _)| span.start);
    let out: Vec<Diagnostic> = found
        .into_iter()
        .map(|(span, path, msg)| diag(span, &path, msg))
        .collect();
    match topology {
        Some(t) if out.is_empty() => Ok(t),
        _ => Err(Diagnostics(out)),
    }
}

/// Byte offsets of line starts, for turning spans into line and column.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex(starts)
    }

    /// 1-based line and character column of a byte offset.
    fn position(&self, src: &str, offset: usize) -> (usize, usize) {
        let line = self.0.partition_point(|&s| s <= offset).max(1);
        let start = self.0[line - 1];
        let end = offset.min(src.len());
        let column = src.get(start..end).map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_finds_line_and_column() {
        let src = "a = 1\nbb = 2\n";
        let idx = LineIndex::new(src);
        assert_eq!(idx.position(src, 0), (1, 1));
        assert_eq!(idx.position(src, 6), (2, 1));
        assert_eq!(idx.position(src, 11), (2, 6));
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = load_str("[cluster\nname = 1\n", "t.toml").unwrap_err();
        assert!(err.0[0].message.starts_with("TOML syntax"), "{err}");
        assert_eq!(err.0[0].line, 1);
    }

    #[test]
    fn unreadable_file_is_one_error() {
        let err = load_file(Path::new("/nonexistent/anylb.toml")).unwrap_err();
        assert!(err.0[0].message.contains("cannot read"), "{err}");
    }
}
