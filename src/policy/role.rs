//! Policy roles: who sees which protected column how.
//!
//! A session's policy role comes from its authenticated PostgreSQL user and
//! that user's role memberships (direct or inherited, read from the
//! catalog). Where several `[[roles]]` match, the one with the highest
//! clearance wins; a user matching none gets `[defaults] role`, whose
//! clearance is 0 unless it names a configured role.

use super::mask::MaskSpec;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One `[[roles]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The policy role's name (for logs and audit).
    pub name: String,
    /// PostgreSQL roles whose members get this policy role.
    #[serde(default)]
    pub members: Vec<String>,
    /// Highest column level this role sees in the clear (0..=4).
    #[serde(default)]
    pub clearance: i64,
    /// Per-column overrides: `"schema.table.column" = "clear" | "mask" |
    /// "null" | "deny" | <mask spec>`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Bulk-read guard: rows with a visible protected column per statement.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Bulk-read guard: the same rows' size in bytes per statement.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Bulk-read guard: rows one user may receive per `window`, across all
    /// its connections.
    #[serde(default)]
    pub window_rows: Option<u64>,
    /// Bulk-read guard: the rolling window's length (e.g. `"10m"`).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<std::time::Duration>,
    /// Bulk-read guard: `"explain"` to check the server's row estimate first.
    #[serde(default)]
    pub precheck: Option<String>,
}

/// The `[defaults]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Policy role for users who map to no `[[roles]]` entry.
    pub role: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            role: "none".into(),
        }
    }
}

/// What a role gets for one protected column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The decrypted value.
    Clear,
    /// The value through a mask.
    Mask(MaskSpec),
    /// SQL NULL.
    Null,
    /// The whole result is refused (42501).
    Deny,
}

/// A role ready for per-column decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRole {
    /// Name, for logs.
    pub name: String,
    /// Clearance 0..=4.
    pub clearance: u8,
    /// Overrides by full column name.
    pub overrides: BTreeMap<String, Override>,
    /// Bulk-read limits; `None` streams results without counting.
    pub limits: Option<crate::guard::Limits>,
}

/// A per-column override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// Always clear.
    Clear,
    /// The column's own mask.
    ColumnMask,
    /// Always NULL.
    Null,
    /// Refuse results with the column.
    Deny,
    /// A specific mask.
    Mask(MaskSpec),
}

impl Override {
    /// Parses an override value; `Err` names what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "clear" => Override::Clear,
            "mask" => Override::ColumnMask,
            "null" => Override::Null,
            "deny" => Override::Deny,
            other => Override::Mask(MaskSpec::parse(other)?),
        })
    }
}

impl PolicyRole {
    /// Builds a role from its config entry.
    pub fn from_config(c: &RoleConfig) -> Result<Self, String> {
        let clearance = u8::try_from(c.clearance)
            .ok()
            .filter(|c| *c <= 4)
            .ok_or_else(|| format!("role {}: clearance must be 0..4", c.name))?;
        let mut overrides = BTreeMap::new();
        for (col, v) in &c.columns {
            let o = Override::parse(v).map_err(|e| format!("role {}: {col}: {e}", c.name))?;
            overrides.insert(col.clone(), o);
        }
        let limits = crate::guard::Limits::from_keys(crate::guard::LimitKeys {
            max_rows: c.max_rows,
            max_bytes: c.max_bytes,
            window_rows: c.window_rows,
            window: c.window,
            precheck: c.precheck.as_deref(),
        })
        .map_err(|e| format!("role {}: {e}", c.name))?;
        Ok(PolicyRole {
            name: c.name.clone(),
            clearance,
            overrides,
            limits,
        })
    }

    /// The role of users who match no configured role.
    pub fn nobody(name: &str) -> Self {
        PolicyRole {
            name: name.to_owned(),
            clearance: 0,
            overrides: BTreeMap::new(),
            limits: None,
        }
    }

    /// What this role gets for a column of `level` whose own mask is `mask`.
    /// Without a mask, a value the role may not see in the clear is NULL.
    pub fn action(&self, full_name: &str, level: u8, mask: Option<&MaskSpec>) -> Action {
        let own_mask = || mask.cloned().map_or(Action::Null, Action::Mask);
        match self.overrides.get(full_name) {
            Some(Override::Clear) => Action::Clear,
            Some(Override::ColumnMask) => own_mask(),
            Some(Override::Null) => Action::Null,
            Some(Override::Deny) => Action::Deny,
            Some(Override::Mask(m)) => Action::Mask(m.clone()),
            None if self.clearance >= level => Action::Clear,
            None => own_mask(),
        }
    }
}

/// Picks the policy role for a user given the PostgreSQL roles it belongs
/// to (itself included): the matching role with the highest clearance.
pub fn resolve<'a>(
    roles: &'a [PolicyRoleEntry],
    memberships: &[String],
    default: &'a PolicyRole,
) -> &'a PolicyRole {
    roles
        .iter()
        .filter(|r| r.members.iter().any(|m| memberships.contains(m)))
        .map(|r| &r.role)
        .max_by_key(|r| r.clearance)
        .unwrap_or(default)
}

/// A role with the PostgreSQL roles that map to it.
#[derive(Debug, Clone)]
pub struct PolicyRoleEntry {
    /// The resolved role.
    pub role: PolicyRole,
    /// PostgreSQL roles whose members get it.
    pub members: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(text: &str) -> PolicyRole {
        PolicyRole::from_config(&toml::from_str::<RoleConfig>(text).unwrap()).unwrap()
    }

    #[test]
    fn clearance_masks_and_overrides() {
        let r = role(
            "name = \"frontdesk\"\nclearance = 2\ncolumns = { \"public.guests.phone\" = \"mask\", \"public.guests.id_number\" = \"deny\", \"public.guests.name\" = \"pseudonym\", \"public.guests.note\" = \"clear\" }\n",
        );
        let phone = MaskSpec::Phone;
        assert_eq!(r.action("public.guests.birth_date", 2, None), Action::Clear);
        assert_eq!(
            r.action("public.guests.email", 3, Some(&MaskSpec::Email)),
            Action::Mask(MaskSpec::Email)
        );
        assert_eq!(r.action("public.guests.email", 3, None), Action::Null);
        assert_eq!(
            r.action("public.guests.phone", 1, Some(&phone)),
            Action::Mask(phone)
        );
        assert_eq!(r.action("public.guests.id_number", 1, None), Action::Deny);
        assert_eq!(
            r.action("public.guests.name", 3, None),
            Action::Mask(MaskSpec::Pseudonym)
        );
        assert_eq!(r.action("public.guests.note", 4, None), Action::Clear);
    }

    #[test]
    fn highest_clearance_wins_and_default_applies() {
        let entries = vec![
            PolicyRoleEntry {
                role: role("name = \"a\"\nclearance = 1\n"),
                members: vec!["staff".into()],
            },
            PolicyRoleEntry {
                role: role("name = \"b\"\nclearance = 3\n"),
                members: vec!["managers".into()],
            },
        ];
        let none = PolicyRole::nobody("none");
        let m = vec![
            "alice".to_owned(),
            "staff".to_owned(),
            "managers".to_owned(),
        ];
        assert_eq!(resolve(&entries, &m, &none).name, "b");
        assert_eq!(resolve(&entries, &["bob".to_owned()], &none).name, "none");
        assert!(PolicyRole::from_config(
            &toml::from_str::<RoleConfig>("name = \"x\"\nclearance = 9\n").unwrap()
        )
        .is_err());
        assert!(PolicyRole::from_config(
            &toml::from_str::<RoleConfig>("name = \"x\"\ncolumns = { \"a.b.c\" = \"bogus\" }\n")
                .unwrap()
        )
        .is_err());
    }
}
