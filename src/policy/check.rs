//! Policy problems, found without (static) and with (live) the database.

use super::column::{ColumnPolicy, QualifiedName};
use super::mask::MaskSpec;
use crate::crypto::LogicalType;
use std::collections::HashMap;

/// One thing wrong with the policy, located by the line of its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the entry's `table` key, when known.
    pub line: Option<usize>,
    /// The column the problem is about, as written.
    pub subject: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Subjects outside `[[columns]]` name their own section.
        let section = if self.subject.starts_with('[') {
            ""
        } else {
            "[[columns]] "
        };
        match self.line {
            Some(l) => write!(f, "line {l}: {section}{}: {}", self.subject, self.message),
            None => write!(f, "{section}{}: {}", self.subject, self.message),
        }
    }
}

/// 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

/// Checks everything that can be checked without a database: names, types,
/// levels, masks and duplicates. `text` is the config file, for line numbers.
pub fn check_static(columns: &[ColumnPolicy], text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: HashMap<QualifiedName, usize> = HashMap::new();
    for p in columns {
        let at = line_of(text, p.table.span().start);
        let line = Some(at);
        let subject = format!("{}.{}", p.table.get_ref(), p.column);
        let mut problem = |message: String| {
            problems.push(Problem {
                line,
                subject: subject.clone(),
                message,
            })
        };
        match QualifiedName::of(p) {
            Ok(name) => {
                if let Some(first) = seen.insert(name.clone(), at) {
                    problem(format!(
                        "{name} is listed twice (first at line {first}); keep one entry"
                    ));
                }
            }
            Err(e) => problem(e),
        }
        let ty = p.logical_type.parse::<LogicalType>();
        if ty.is_err() {
            problem(format!(
                "unknown type {:?}; use one of text, varchar, char, int2, int4, int8, numeric, \
                 float4, float8, bool, date, time, timestamp, timestamptz, uuid, json, jsonb, bytea",
                p.logical_type
            ));
        }
        if !(1..=4).contains(&p.level) {
            problem(format!(
                "level must be 1 (low) to 4 (extreme), got {}",
                p.level
            ));
        }
        if let Some(mask) = &p.mask {
            match MaskSpec::parse(mask) {
                Err(e) => problem(e),
                Ok(m) => {
                    if let Ok(ty) = ty {
                        if !m.fits(ty) {
                            problem(format!(
                                "mask {mask:?} does not produce a valid {} value; choose null, \
                                 year (dates) or a type-appropriate mask",
                                p.logical_type
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// Checks `[[roles]]`: clearance range, override values, and that each
/// override names a configured protected column.
pub fn check_roles(roles: &[super::role::RoleConfig], columns: &[ColumnPolicy]) -> Vec<Problem> {
    let known: Vec<String> = columns
        .iter()
        .filter_map(|c| QualifiedName::of(c).ok())
        .map(|n| n.to_string())
        .collect();
    let mut problems = Vec::new();
    for r in roles {
        let mut problem = |message: String| {
            problems.push(Problem {
                line: None,
                subject: format!("role {}", r.name),
                message,
            })
        };
        if let Err(e) = super::role::PolicyRole::from_config(r) {
            problem(e);
        }
        for col in r.columns.keys() {
            if !known.contains(col) {
                problem(format!(
                    "override for {col}, which is not a protected column; use schema.table.column as in [[columns]]"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(text: &str) -> Vec<ColumnPolicy> {
        #[derive(serde::Deserialize)]
        struct F {
            columns: Vec<ColumnPolicy>,
        }
        toml::from_str::<F>(text).unwrap().columns
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "\
[[columns]]
table = \"public.guests\"
column = \"phone\"
type = \"text\"
encrypt = \"searchable\"
level = 3
mask = \"phone\"

[[columns]]
table = \"guests\"
column = \"PHONE\"
type = \"txet\"
level = 9
mask = \"phon\"

[[columns]]
table = \"guests\"
column = \"card\"
type = \"int8\"
level = 4
mask = \"phone\"
";
        let problems = check_static(&columns(text), text);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{shown:#?}");
        assert!(
            shown[0].starts_with("line 10:") && shown[0].contains("listed twice (first at line 2)"),
            "{shown:#?}"
        );
        assert!(shown[1].contains("unknown type \"txet\""), "{shown:#?}");
        assert!(
            shown[2].contains("level must be 1 (low) to 4"),
            "{shown:#?}"
        );
        assert!(shown[3].contains("unknown mask \"phon\""), "{shown:#?}");
        assert!(
            shown[4].starts_with("line 17:") && shown[4].contains("does not produce a valid int8"),
            "{shown:#?}"
        );
    }

    #[test]
    fn a_good_policy_has_no_problems() {
        let text = "[[columns]]\ntable = \"guests\"\ncolumn = \"birth_date\"\ntype = \"date\"\nlevel = 2\nmask = \"year\"\n";
        assert!(check_static(&columns(text), text).is_empty());
    }
}
