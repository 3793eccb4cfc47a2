//! containerd's filter syntax (its `filters` package) over snapshot infos, for `List`.
//!
//! A filter is selectors joined by `,`, all of which must hold; `List` returns what any of
//! its filters matches. A selector is a field path (`name`, `parent`, `kind`, `labels.KEY`,
//! a component quoted as `"…"` when it holds other characters, e.g.
//! `labels."containerd.io/gc.root"`), alone (the field is present and not empty) or with
//! `==`, `!=` or `~=` (a regular expression) and a value, bare or quoted (`"…"`, or `/…/`
//! for a regular expression).

use super::error::SnapError;
use super::meta::Record;

/// How a selector compares.
#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(regex_lite::Regex),
}

/// One selector.
#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed filter: selectors that must all hold.
#[derive(Debug)]
pub struct Filter(Vec<Selector>);

struct Scanner<'a> {
    s: &'a [u8],
    at: usize,
    text: &'a str,
}

impl Scanner<'_> {
    fn skip_space(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn error(&self, what: &str) -> SnapError {
        SnapError::invalid(format!("filter '{}' is malformed at byte {}: {what}", self.text, self.at))
    }

    /// A quoted string starting at the current byte (its delimiter), escapes undone.
    fn quoted(&mut self) -> Result<String, SnapError> {
        let Some(delim) = self.peek() else { return Err(self.error("a quoted string ends early")) };
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a quoted string is not closed")),
                Some(c) if c == delim => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    let Some(c) = self.peek() else { return Err(self.error("an escape ends early")) };
                    match c {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'\\' if delim == b'"' => out.push(b'\\'),
                        c if c == delim => out.push(c),
                        // Any other escape stays one (a regular expression's `\.`).
                        c => out.extend_from_slice(&[b'\\', c]),
                    }
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("a quoted string is not UTF-8"))
    }

    fn field(&mut self) -> Result<String, SnapError> {
        self.skip_space();
        if self.peek() == Some(b'"') {
            return self.quoted();
        }
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.error("a field name is expected"));
        }
        Ok(self.text[start..self.at].to_string())
    }

    fn value(&mut self) -> Result<String, SnapError> {
        self.skip_space();
        match self.peek() {
            Some(b'"' | b'/' | b'|') => self.quoted(),
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| c != b',' && !c.is_ascii_whitespace()) {
                    self.at += 1;
                }
                if start == self.at {
                    return Err(self.error("a value is expected"));
                }
                Ok(self.text[start..self.at].to_string())
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, SnapError> {
        let mut path = vec![self.field()?];
        while self.peek() == Some(b'.') {
            self.at += 1;
            path.push(self.field()?);
        }
        self.skip_space();
        let rest = &self.s[self.at..];
        let op =
            if rest.starts_with(b"==") || rest.starts_with(b"!=") || rest.starts_with(b"~=") {
                let kind = rest[0];
                self.at += 2;
                let v = self.value()?;
                match kind {
                    b'=' => Op::Equal(v),
                    b'!' => Op::NotEqual(v),
                    _ => Op::Matches(regex_lite::Regex::new(&v).map_err(|e| {
                        SnapError::invalid(format!("filter '{}': bad regular expression: {e}", self.text))
                    })?),
                }
            } else {
                Op::Present
            };
        Ok(Selector { path, op })
    }
}

impl Filter {
    /// Parses one filter.
    pub fn parse(text: &str) -> Result<Filter, SnapError> {
        let mut sc = Scanner { s: text.as_bytes(), at: 0, text };
        let mut out = vec![sc.selector()?];
        loop {
            sc.skip_space();
            match sc.peek() {
                None => return Ok(Filter(out)),
                Some(b',') => {
                    sc.at += 1;
                    out.push(sc.selector()?);
                }
                Some(_) => return Err(sc.error("',' or the end is expected")),
            }
        }
    }

    /// Whether snapshot `key` with record `rec` matches.
    pub fn matches(&self, key: &str, rec: &Record) -> bool {
        self.0.iter().all(|s| {
            let value = match s.path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["name"] => Some(key),
                ["parent"] => Some(rec.parent.as_str()),
                ["kind"] => Some(rec.kind.name()),
                ["labels", label] => rec.labels.get(*label).map(String::as_str),
                _ => None,
            };
            match (&s.op, value) {
                (Op::Present, v) => v.is_some_and(|v| !v.is_empty()),
                (Op::Equal(want), Some(v)) => v == want,
                (Op::NotEqual(want), Some(v)) => v != want,
                (Op::Matches(re), Some(v)) => re.is_match(v),
                (_, None) => false,
            }
        })
    }
}

/// Whether `key`/`rec` matches any of `filters` (all pass when there are none).
pub fn any(filters: &[Filter], key: &str, rec: &Record) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(key, rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshotter::meta::{Kind, Time, Usage};

    fn rec() -> Record {
        Record {
            id: 1,
            kind: Kind::Committed,
            parent: "p".into(),
            labels: [("containerd.io/gc.root".to_string(), "x y".to_string()), ("a".to_string(), "1".to_string())]
                .into_iter()
                .collect(),
            created: Time::default(),
            updated: Time::default(),
            usage: Usage::default(),
        }
    }

    #[test]
    fn selectors_fields_and_operators() {
        let r = rec();
        let m = |f: &str| Filter::parse(f).unwrap().matches("k/1", &r);
        assert!(m("name==k/1"));
        assert!(m("kind==committed,parent==p"));
        assert!(!m("kind==committed,parent==q"));
        assert!(m("parent!=q"));
        assert!(m(r#"labels."containerd.io/gc.root"=="x y""#));
        assert!(m(r#"labels."containerd.io/gc.root""#));
        assert!(m("labels.a"));
        assert!(!m("labels.b"));
        assert!(!m("labels.b!=1"), "a missing field matches nothing, as in containerd");
        assert!(m("name~=/^k\\/[0-9]$/"));
        assert!(m(" name ~= ^k , labels.a == 1 "));
        assert!(!m("unknown"));
    }

    #[test]
    fn malformed_filters_are_invalid_arguments() {
        for f in ["", "name==", "name=x", "labels.\"open", ",", "name~=(", "name==a b"] {
            let e = Filter::parse(f).unwrap_err();
            assert_eq!(e.code, super::super::error::Code::InvalidArgument, "{f}");
        }
    }
}
