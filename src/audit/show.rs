//! Reading a trail: `pgveil audit show`.
//!
//! A prepared statement's query (its fingerprint, tables and columns) is
//! written in full on its first record in each file; the later records
//! there carry only `"query":<id>` (see `chain::Head`). `show` prints every
//! record with its query filled in, right after `"query"`, so that `jq` and
//! `grep` see each statement whole. Its lines are for reading, not the
//! sealed bytes: their MACs do not verify. `pgveil audit verify` checks
//! the files themselves, and that every reference resolves.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::AuditError;

/// The fields a query's first record carries and later ones refer to.
const QUERY_FIELDS: [&str; 3] = ["fingerprint", "tables", "columns"];

/// The queries written in full so far in one file of one run.
#[derive(Debug, Default)]
pub struct Queries {
    /// Query id → `,"fingerprint":…,"tables":[…],"columns":[…]`.
    fields: HashMap<u64, Vec<u8>>,
}

/// A record referring to a query not written in full before it in its
/// file (the earlier part of the file is lost, or the line was not written
/// by pgveil).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unresolved {
    /// The query it names.
    pub query: u64,
}

impl Queries {
    /// Forgets every query: a new file, or a new run in the same file.
    pub fn reset(&mut self) {
        self.fields.clear();
    }

    /// Takes note of one record (a line without its newline); a record
    /// that refers to a query comes back with the query's fields added.
    /// Other lines come back as they are.
    pub fn expand(&mut self, line: &[u8]) -> Result<Vec<u8>, Unresolved> {
        let Ok(record) = serde_json::from_slice::<Map<String, Value>>(line) else {
            return Ok(line.to_vec());
        };
        match record.get("kind").and_then(Value::as_str) {
            Some("start") => self.reset(),
            Some("statement") => {}
            _ => return Ok(line.to_vec()),
        }
        let Some(query) = record.get("query").and_then(Value::as_u64) else {
            return Ok(line.to_vec());
        };
        if record.contains_key("fingerprint") {
            let mut fields = Vec::new();
            for name in QUERY_FIELDS {
                let value = record.get(name).unwrap_or(&Value::Null);
                fields.extend_from_slice(format!(",\"{name}\":").as_bytes());
                // Writing a parsed value to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut fields, value);
            }
            self.fields.insert(query, fields);
            return Ok(line.to_vec());
        }
        let prefix = format!("{{\"kind\":\"statement\",\"query\":{query}");
        match (
            self.fields.get(&query),
            line.strip_prefix(prefix.as_bytes()),
        ) {
            (Some(fields), Some(rest)) => {
                let mut out = Vec::with_capacity(line.len() + fields.len());
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(fields);
                out.extend_from_slice(rest);
                Ok(out)
            }
            _ => Err(Unresolved { query }),
        }
    }
}

/// Every line of one file, each statement with its query filled in; the
/// records whose query could not be found are returned as they are and
/// counted.
pub fn expand_file(bytes: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut queries = Queries::default();
    let mut unresolved = 0;
    let lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            queries.expand(l).unwrap_or_else(|_| {
                unresolved += 1;
                l.to_vec()
            })
        })
        .collect();
    (lines, unresolved)
}

/// Prints `files` (a rotated series in any order: printed in sequence
/// order) to `out`, every statement whole. Returns how many records named
/// a query that their file does not hold (printed as they are).
pub fn show(files: &[PathBuf], out: &mut dyn Write) -> Result<u64, AuditError> {
    let mut unresolved = 0;
    for (path, bytes) in super::verify::read_in_order(files)? {
        let (lines, missing) = expand_file(&bytes);
        unresolved += missing;
        for line in lines {
            out.write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| AuditError::Io {
                    action: "print",
                    path: path.clone(),
                    source,
                })?;
        }
    }
    Ok(unresolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_filled_in_from_the_query_s_first_record() {
        let file = concat!(
            r#"{"kind":"start","run":"r1"}"#,
            "\n",
            r#"{"kind":"statement","query":7,"fingerprint":"SELECT \"a\" FROM t WHERE id = ?","tables":["public.t"],"columns":[{"column":"public.t.a","action":"masked"}],"conn":1,"seq":1}"#,
            "\n",
            r#"{"kind":"statement","query":7,"conn":2,"rows":1,"seq":2}"#,
            "\n",
            r#"{"kind":"statement","fingerprint":null,"tables":[],"columns":[],"conn":2,"seq":3}"#,
            "\n",
            r#"{"kind":"start","run":"r2"}"#,
            "\n",
            r#"{"kind":"statement","query":7,"conn":3,"seq":5}"#,
            "\n",
        );
        let (lines, unresolved) = expand_file(file.as_bytes());
        assert_eq!(lines.len(), 6);
        let rec = |i: usize| -> Value { serde_json::from_slice(&lines[i]).expect("json") };
        let (first, later) = (rec(1), rec(2));
        for name in QUERY_FIELDS {
            assert_eq!(later[name], first[name], "{name}");
        }
        assert_eq!(later["conn"], 2);
        assert_eq!(later["rows"], 1);
        assert!(String::from_utf8_lossy(&lines[2])
            .starts_with(r#"{"kind":"statement","query":7,"fingerprint":"SELECT \"a\""#));
        // Records without a query, and other kinds, pass unchanged.
        assert_eq!(lines[3], file.lines().nth(3).expect("line").as_bytes());
        // A new run's ids are its own: 7 of the first run does not resolve.
        assert_eq!(unresolved, 1);
        assert_eq!(lines[5], file.lines().nth(5).expect("line").as_bytes());
    }
}
