//! The manager's metadata files: small, line-based, readable by a person.
//!
//! ```text
//! # unionfs container
//! name: cont1
//! image: demo:1.0
//! layer: sha256:9f86...   (keys may repeat)
//! ```
//! Values escape `\` as `\\` and a newline as `\n`. Writes are atomic: a temporary in the
//! same directory, fsync, rename, fsync of the directory.

use std::io::Write;
use std::path::Path;

use crate::error::{Context, Error};

/// An ordered list of `key: value` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    kind: String,
    pairs: Vec<(String, String)>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Record {
    /// An empty record of a kind ("container", "image", ...), named in the header comment.
    pub fn new(kind: &str) -> Record {
        Record { kind: kind.into(), pairs: Vec::new() }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// Sets `key` to one value (replacing all others).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        if let Some(i) = self.pairs.iter().position(|(k, _)| k == key) {
            self.pairs[i].1 = value;
            let mut n = 0;
            self.pairs.retain(|(k, _)| {
                if k == key {
                    n += 1;
                    n == 1
                } else {
                    true
                }
            });
        } else {
            self.pairs.push((key.into(), value));
        }
    }

    /// Adds one more value for `key`.
    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Removes every value of `key`.
    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The text form.
    pub fn render(&self) -> String {
        let mut s = format!("# unionfs {}\n", self.kind);
        for (k, v) in &self.pairs {
            s.push_str(&format!("{k}: {}\n", escape(v)));
        }
        s
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Record, Error> {
        let mut r = Record::default();
        for (n, line) in text.lines().enumerate() {
            if let Some(kind) = line.strip_prefix("# unionfs ") {
                if n == 0 {
                    r.kind = kind.trim().into();
                }
                continue;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
                .ok_or_else(|| Error::msg(format!("line {}: expected 'key: value'", n + 1)))?;
            r.pairs.push((k.trim().into(), unescape(v)));
        }
        Ok(r)
    }
}

/// Reads a record file.
pub fn read(path: &Path) -> Result<Record, Error> {
    let text = std::fs::read_to_string(path).context(|| format!("cannot read '{}'", path.display()))?;
    Record::parse(&text).map_err(|e| Error::msg(format!("'{}' is corrupt: {e}", path.display())))
}

/// The records of every entry of directory `dir` that has one (`ENTRY/meta`); `what` names
/// the list in an error.
pub fn read_dir(dir: &Path, what: &str) -> Result<Vec<Record>, Error> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).context(|| format!("cannot read '{}'", dir.display()))? {
        let e = e.context(|| format!("cannot read the {what} list"))?;
        let m = e.path().join("meta");
        if m.exists() {
            v.push(read(&m)?);
        }
    }
    Ok(v)
}

/// The records of every file in `dir` (dot files, which are temporaries, left out).
pub fn read_files(dir: &Path, what: &str) -> Result<Vec<Record>, Error> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).context(|| format!("cannot read '{}'", dir.display()))? {
        let e = e.context(|| format!("cannot read the {what} list"))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(read(&e.path())?);
        }
    }
    Ok(v)
}

/// Writes bytes to a file atomically (as [`fn@write`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = crate::outfile::OutFile::create(path)?;
    f.write_all(bytes).context(|| format!("cannot write '{}'", path.display()))?;
    f.commit()
}

/// Writes a record file atomically (temporary, fsync, rename, fsync of the directory).
pub fn write(path: &Path, r: &Record) -> Result<(), Error> {
    let mut f = crate::outfile::OutFile::create(path)?;
    f.write_all(r.render().as_bytes()).context(|| format!("cannot write '{}'", path.display()))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_escapes_and_repeats() {
        let mut r = Record::new("container");
        r.set("name", "c1");
        r.push("layer", "a");
        r.push("layer", "b");
        r.set("note", "two\nlines \\ and a backslash");
        let back = Record::parse(&r.render()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.all("layer"), ["a", "b"]);
        assert_eq!(back.get("note"), Some("two\nlines \\ and a backslash"));
    }

    #[test]
    fn set_replaces_all_values() {
        let mut r = Record::new("x");
        r.push("k", "1");
        r.push("k", "2");
        r.set("k", "3");
        assert_eq!(r.all("k"), ["3"]);
    }

    #[test]
    fn corrupt_text_is_an_error() {
        assert!(Record::parse("no colon here").is_err());
        assert!(Record::parse("# unionfs x\nempty:\n").unwrap().get("empty") == Some(""));
    }
}
