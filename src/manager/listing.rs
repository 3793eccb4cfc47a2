//! Lists (`ps`, `images`, `volume ls`) printed as Docker prints them: an aligned table,
//! only ids (`-q`), one JSON object a line (`--format json`), or a Go-template-like line
//! per row (`--format '{{.Names}}\t{{.ID}}'`, `table` in front for a header).

use crate::error::Error;
use crate::manager::report::table;

/// One column: the template field name (`ID`), its table header (`CONTAINER ID`), and
/// whether the default table shows it.
pub struct Column {
    /// `{{.Field}}` name, and the key in JSON.
    pub field: &'static str,
    /// Header in a table.
    pub header: &'static str,
    /// Shown without `--format`.
    pub default: bool,
}

impl Column {
    /// A column: its field, its header, whether the default table shows it.
    pub const fn new(field: &'static str, header: &'static str, default: bool) -> Column {
        Column { field, header, default }
    }
}

/// A list to print.
pub struct Listing {
    /// Its columns.
    pub columns: Vec<Column>,
    /// Its rows, a value per column.
    pub rows: Vec<Vec<String>>,
    /// The field `-q` prints.
    pub id_field: &'static str,
}

/// How to print a list.
#[derive(Clone, Debug, Default)]
pub struct Style {
    /// Only the ids.
    pub quiet: bool,
    /// `--format`: `json`, `table TEMPLATE` or `TEMPLATE`.
    pub format: Option<String>,
}

impl Listing {
    fn index(&self, field: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.field.eq_ignore_ascii_case(field))
    }

    /// The list printed in `style`.
    pub fn render(&self, style: &Style) -> Result<String, Error> {
        if style.quiet {
            let i = self.index(self.id_field).unwrap_or(0);
            return Ok(self.rows.iter().map(|r| format!("{}\n", r[i])).collect());
        }
        match style.format.as_deref().map(str::trim) {
            None | Some("") | Some("table") => {
                let shown: Vec<usize> = (0..self.columns.len()).filter(|&i| self.columns[i].default).collect();
                let mut t = vec![shown.iter().map(|&i| self.columns[i].header.to_string()).collect()];
                t.extend(self.rows.iter().map(|r| shown.iter().map(|&i| r[i].clone()).collect()));
                Ok(table(&t))
            }
            Some("json") => {
                let mut out = String::new();
                for r in &self.rows {
                    let obj: serde_json::Map<String, serde_json::Value> = self
                        .columns
                        .iter()
                        .zip(r)
                        .map(|(c, v)| (c.field.to_string(), serde_json::Value::String(v.clone())))
                        .collect();
                    out.push_str(&serde_json::Value::Object(obj).to_string());
                    out.push('\n');
                }
                Ok(out)
            }
            Some(f) => self.template(f),
        }
    }

    fn template(&self, f: &str) -> Result<String, Error> {
        let (with_header, f) = match f.strip_prefix("table ") {
            Some(rest) => (true, rest),
            None => (false, f),
        };
        let f = f.replace("\\t", "\t").replace("\\n", "\n");
        let parts = parse_template(&f)?;
        for p in &parts {
            if let Part::Field(name, _) = p
                && self.index(name).is_none()
            {
                let known: Vec<&str> = self.columns.iter().map(|c| c.field).collect();
                return Err(Error::msg(format!("--format: no field '{name}' here (fields: {})", known.join(", "))));
            }
        }
        let fill = |value: &dyn Fn(usize) -> String| -> String {
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.clone(),
                    Part::Field(n, false) => self.index(n).map(value).unwrap_or_default(),
                    Part::Field(n, true) => {
                        serde_json::Value::String(self.index(n).map(value).unwrap_or_default()).to_string()
                    }
                })
                .collect()
        };
        let mut lines: Vec<String> = Vec::new();
        if with_header {
            lines.push(fill(&|i| self.columns[i].header.to_string()));
        }
        for r in &self.rows {
            lines.push(fill(&|i| r[i].clone()));
        }
        if with_header {
            // Columns split by tabs are aligned, as docker's tabwriter does.
            let cells: Vec<Vec<String>> = lines.iter().map(|l| l.split('\t').map(String::from).collect()).collect();
            return Ok(table(&cells));
        }
        Ok(lines.iter().map(|l| format!("{l}\n")).collect())
    }
}

enum Part {
    Text(String),
    /// A field, and whether it is printed as a JSON string (`{{json .Field}}`).
    Field(String, bool),
}

/// Splits `text {{.Field}} text` into its parts; `{{ .Field }}` and `{{json .Field}}`
/// (the value as a JSON string) are read too.
fn parse_template(f: &str) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let mut rest = f;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let end = rest[start..].find("}}").ok_or_else(|| Error::msg("--format: '{{' without '}}'"))? + start;
        let inner = rest[start + 2..end].trim();
        let (inner, json) = match inner.strip_prefix("json ") {
            Some(rest) => (rest.trim(), true),
            None => (inner, false),
        };
        let name = inner
            .strip_prefix('.')
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| Error::msg(format!("--format: '{{{{{inner}}}}}' is not a field (like {{{{.ID}}}})")))?;
        parts.push(Part::Field(name.to_string(), json));
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Listing {
        Listing {
            columns: vec![
                Column { field: "ID", header: "CONTAINER ID", default: true },
                Column { field: "Names", header: "NAMES", default: true },
                Column { field: "State", header: "STATE", default: false },
            ],
            rows: vec![
                vec!["abc".into(), "c1".into(), "running".into()],
                vec!["def".into(), "c2".into(), "exited".into()],
            ],
            id_field: "ID",
        }
    }

    #[test]
    fn styles() {
        let l = demo();
        assert_eq!(l.render(&Style { quiet: true, format: None }).unwrap(), "abc\ndef\n");
        let t = l.render(&Style::default()).unwrap();
        assert!(t.starts_with("CONTAINER ID") && !t.contains("STATE"), "{t}");
        let j = l.render(&Style { quiet: false, format: Some("json".into()) }).unwrap();
        assert_eq!(j.lines().next().unwrap(), r#"{"ID":"abc","Names":"c1","State":"running"}"#);
        let g = l.render(&Style { quiet: false, format: Some("{{.Names}}:{{ .State }}".into()) }).unwrap();
        assert_eq!(g, "c1:running\nc2:exited\n");
        let q = l.render(&Style { quiet: false, format: Some("{{json .Names}}".into()) }).unwrap();
        assert_eq!(q, "\"c1\"\n\"c2\"\n");
        let h = l.render(&Style { quiet: false, format: Some("table {{.Names}}\\t{{.ID}}".into()) }).unwrap();
        let lines: Vec<&str> = h.lines().collect();
        assert!(lines[0].starts_with("NAMES") && lines[0].trim_end().ends_with("CONTAINER ID"), "{h}");
        assert!(lines[1].starts_with("c1 ") && lines[1].trim_end().ends_with("abc"), "{h}");
        assert!(l.render(&Style { quiet: false, format: Some("{{.Nope}}".into()) }).is_err());
        assert!(l.render(&Style { quiet: false, format: Some("{{.ID".into()) }).is_err());
    }
}
