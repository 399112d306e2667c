//! Applying SQL plans with the keyring: what the session calls to turn a
//! client's statement into the one the server may see.
//!
//! [`Protector`] is shared by all sessions: the catalog, the pre-filters,
//! one cached cipher per protected column, and the plan cache. It is
//! replaced as a whole when the catalog is reloaded, so a statement is
//! always planned and encrypted against one consistent snapshot.

pub mod bind;
pub mod copy;

use crate::catalog::Catalog;
use crate::crypto::{ColumnCipher, Format, Keyring, Mode};
use crate::policy::mask::{MaskSpec, PseudonymKey};
use crate::policy::role::{self, Action, PolicyRole, PolicyRoleEntry};
use crate::policy::Protection;
use crate::sql::{self, EditKind, ParamUsage, Plan, Prefilter, ProtectedColumn, Refusal, Schema};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Plans kept at most; the cache is cleared when it grows past this, which
/// bounds its memory for workloads whose SQL text never repeats.
const MAX_CACHED_PLANS: usize = 10_000;
/// Longest statement text whose plan is cached.
const MAX_CACHED_SQL: usize = 16 * 1024;

/// One consistent view: catalog, filters and ciphers built from it.
#[derive(Debug)]
pub struct Snapshot {
    catalog: Catalog,
    prefilter: Prefilter,
    missing: Option<Prefilter>,
    ciphers: HashMap<String, Arc<ColumnCipher>>,
    pseudonyms: HashMap<String, Arc<PseudonymKey>>,
    plans: DashMap<Arc<str>, Arc<Analyzed>>,
    /// Shared answer for statements the pre-filter rules out (no allocation).
    passthrough: Arc<Plan>,
    /// The same, with the (empty) facts the bulk-read guard asks for.
    passthrough_analysis: Arc<Analyzed>,
    policy: Arc<ReadPolicy>,
    /// Counts snapshots built; a session resolves its policy role again
    /// when this changes (new roles, new memberships).
    generation: u64,
}

/// Shared protection state; cheap to read from every session.
#[derive(Debug)]
pub struct Protector {
    current: RwLock<Arc<Snapshot>>,
    /// Replaced by a configuration reload (e.g. after `pgveil keyring rotate`).
    keyring: RwLock<Arc<Keyring>>,
    /// Replaced by a configuration reload.
    policy: RwLock<Arc<ReadPolicy>>,
    generations: std::sync::atomic::AtomicU64,
    /// Table OIDs seen in results that the catalog did not know; each
    /// triggers one reload (a protected table may have been re-created).
    seen_oids: dashmap::DashSet<u32>,
    /// Bulk-read guard state shared by every session: window counters,
    /// used single-use approvals, the approval verifying key.
    guard: Arc<crate::guard::Guard>,
}

/// A cached analysis: the plan, and what the bulk-read guard needs.
#[derive(Debug)]
pub struct Analyzed {
    /// How to relay the statement text, or why it is refused.
    pub plan: Result<Arc<Plan>, Refusal>,
    /// Statements that return protected columns.
    pub reads: Vec<sql::BulkRead>,
}

/// The read side of the policy: roles and each column's mask.
#[derive(Debug, Clone)]
pub struct ReadPolicy {
    /// Configured roles with their PostgreSQL member roles.
    pub roles: Vec<PolicyRoleEntry>,
    /// The role of users who match none.
    pub default: PolicyRole,
    /// Each protected column's own mask, by full name.
    pub masks: HashMap<String, MaskSpec>,
}

impl ReadPolicy {
    /// Builds the read policy from a validated configuration.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let mut roles = Vec::new();
        for r in &config.roles {
            roles.push(PolicyRoleEntry {
                role: PolicyRole::from_config(r)?,
                members: r.members.clone(),
            });
        }
        let default = roles
            .iter()
            .find(|r| r.role.name == config.defaults.role)
            .map(|r| r.role.clone())
            .unwrap_or_else(|| PolicyRole::nobody(&config.defaults.role));
        let mut masks = HashMap::new();
        for c in &config.columns {
            if let (Ok(name), Some(m)) = (crate::policy::QualifiedName::of(c), &c.mask) {
                masks.insert(name.to_string(), MaskSpec::parse(m)?);
            }
        }
        Ok(ReadPolicy {
            roles,
            default,
            masks,
        })
    }
}

impl Protector {
    /// Builds ciphers for every protected column of `catalog`.
    pub fn new(
        catalog: Catalog,
        keyring: Keyring,
        policy: ReadPolicy,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let policy = Arc::new(policy);
        let snapshot = Snapshot::build(catalog, &keyring, policy.clone(), 0)?;
        let guard = Arc::new(crate::guard::Guard::new(keyring.signing_public_key()));
        Ok(Protector {
            current: RwLock::new(Arc::new(snapshot)),
            keyring: RwLock::new(Arc::new(keyring)),
            policy: RwLock::new(policy),
            generations: std::sync::atomic::AtomicU64::new(0),
            seen_oids: dashmap::DashSet::new(),
            guard,
        })
    }

    /// The bulk-read guard's shared state.
    pub fn guard(&self) -> &Arc<crate::guard::Guard> {
        &self.guard
    }

    fn policy(&self) -> Arc<ReadPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The generation of the latest snapshot built; a cheap atomic read
    /// sessions use to notice a reload without taking the snapshot.
    pub fn generation(&self) -> u64 {
        self.generations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The generation for a snapshot being built. Builds are serialised by
    /// the server's reload lock; the counter moves only when one is
    /// installed, so a failed build changes nothing.
    fn next_generation(&self) -> u64 {
        self.generation() + 1
    }

    fn install(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let snapshot = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.generations
            .store(generation, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces keyring, policy and catalog together (configuration
    /// reload): the next statement of every session uses them, so a new
    /// active key version (after `pgveil keyring rotate`) is used for
    /// writes from then on. Nothing changes if the new snapshot cannot be
    /// built.
    pub fn replace(
        &self,
        catalog: Catalog,
        policy: ReadPolicy,
        keyring: Keyring,
    ) -> Result<(), crate::crypto::CryptoError> {
        let policy = Arc::new(policy);
        let keyring = Arc::new(keyring);
        let snapshot = Snapshot::build(catalog, &keyring, policy.clone(), self.next_generation())?;
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
        match self.keyring.write() {
            Ok(mut k) => *k = keyring,
            Err(poisoned) => *poisoned.into_inner() = keyring,
        }
        self.install(snapshot);
        Ok(())
    }

    /// The current snapshot; sessions hold it for one statement.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records a result table OID the catalog does not know; `true` the
    /// first time, when the caller should ask for a reload.
    pub fn note_unknown_oid(&self, oid: u32) -> bool {
        if self.seen_oids.len() > 100_000 {
            self.seen_oids.clear();
        }
        self.seen_oids.insert(oid)
    }

    /// Replaces the catalog (after DDL or a reload).
    pub fn replace_catalog(&self, catalog: Catalog) -> Result<(), crate::crypto::CryptoError> {
        let snapshot = Snapshot::build(
            catalog,
            &self.keyring(),
            self.policy(),
            self.next_generation(),
        )?;
        self.install(snapshot);
        Ok(())
    }
}

impl Snapshot {
    fn build(
        catalog: Catalog,
        keyring: &Keyring,
        policy: Arc<ReadPolicy>,
        generation: u64,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let mut ciphers = HashMap::new();
        let mut pseudonyms = HashMap::new();
        for col in catalog.protected_columns() {
            let key = keyring.pseudonym_key(&col.full_name)?;
            pseudonyms.insert(col.full_name.clone(), Arc::new(PseudonymKey::from(key)));
            let mode = match col.protection {
                Protection::None => continue,
                Protection::Randomized => Mode::Randomized,
                Protection::Searchable => Mode::Searchable,
            };
            let cipher = keyring.column(&col.full_name, col.logical_type, mode)?;
            ciphers.insert(col.full_name.clone(), Arc::new(cipher));
        }
        // The approval setting is a "protected name" too: a statement that
        // mentions it outside pgveil's own SET must be analysed (and refused).
        let mut names = catalog.protected_names();
        names.push(sql::bulk::APPROVAL_SETTING.to_owned());
        let prefilter = Prefilter::new(&names);
        let missing_names: Vec<String> = catalog
            .missing()
            .iter()
            .filter_map(|m| m.split('.').nth(1).map(str::to_lowercase))
            .collect();
        let missing = (!missing_names.is_empty()).then(|| Prefilter::new(&missing_names));
        Ok(Snapshot {
            catalog,
            prefilter,
            missing,
            ciphers,
            pseudonyms,
            plans: DashMap::new(),
            passthrough: Arc::new(Plan::Passthrough),
            passthrough_analysis: Arc::new(Analyzed {
                plan: Ok(Arc::new(Plan::Passthrough)),
                reads: Vec::new(),
            }),
            policy,
            generation,
        })
    }

    /// Which build this is; changes on every catalog or policy reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The policy role of an authenticated user.
    pub fn role_for(&self, user: &str) -> PolicyRole {
        let memberships = self.catalog.memberships(user);
        role::resolve(&self.policy.roles, &memberships, &self.policy.default).clone()
    }

    /// What `role` gets for a protected column.
    pub fn action(&self, role: &PolicyRole, column: &ProtectedColumn) -> Action {
        role.action(
            &column.full_name,
            column.level,
            self.policy.masks.get(&column.full_name),
        )
    }

    /// The key of the `pseudonym` mask for a protected column.
    pub fn pseudonym_key(&self, column: &ProtectedColumn) -> Option<&Arc<PseudonymKey>> {
        self.pseudonyms.get(&column.full_name)
    }

    /// The cipher of an encrypted column, `None` for plaintext (`none`) columns.
    pub fn cipher_opt(&self, column: &ProtectedColumn) -> Option<&Arc<ColumnCipher>> {
        self.ciphers.get(&column.full_name)
    }

    /// The catalog this snapshot was built from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Plans a statement, from the cache when its text was seen before.
    pub fn plan(&self, sql: &str) -> Result<Arc<Plan>, Refusal> {
        if !self.prefilter.might_touch(sql) && !self.missing_hit(sql) {
            return Ok(self.passthrough.clone());
        }
        self.analysis(sql).plan.clone()
    }

    /// The plan and the bulk-read facts of a statement, from the cache when
    /// its text was seen before. Sessions of roles with bulk-read limits
    /// ask for this; others only need [`Snapshot::plan`].
    pub fn analysis(&self, sql: &str) -> Arc<Analyzed> {
        if self.missing_hit(sql) {
            return Arc::new(Analyzed {
                plan: Err(Refusal {
                    sqlstate: "0A000",
                    message: format!(
                        "pgveil: the statement may touch a protected table or column that was not \
                         found in the database when pgveil loaded its catalog ({}); create it and \
                         reload pgveil's catalog, or fix the policy",
                        self.catalog.missing().join(", ")
                    ),
                }),
                reads: Vec::new(),
            });
        }
        if !self.prefilter.might_touch(sql) {
            return self.passthrough_analysis.clone();
        }
        if let Some(hit) = self.plans.get(sql) {
            crate::admin::metrics().plan_cache_hits.inc();
            return hit.value().clone();
        }
        crate::admin::metrics().plan_cache_misses.inc();
        let analysis = sql::analyze_full(sql, &self.catalog, &self.prefilter);
        let analyzed = Arc::new(Analyzed {
            plan: analysis.plan.map(Arc::new),
            reads: analysis.reads,
        });
        if sql.len() <= MAX_CACHED_SQL {
            if self.plans.len() >= MAX_CACHED_PLANS {
                self.plans.clear();
            }
            self.plans.insert(Arc::from(sql), analyzed.clone());
        }
        analyzed
    }

    /// Whether `sql` may name a policy table missing from the database
    /// (DDL creating it may pass).
    fn missing_hit(&self, sql: &str) -> bool {
        self.missing
            .as_ref()
            .is_some_and(|m| m.might_touch(sql) && !only_ddl(sql))
    }

    /// The cipher of a protected, encrypted column.
    pub fn cipher(&self, column: &ProtectedColumn) -> Result<&Arc<ColumnCipher>, Refusal> {
        self.ciphers.get(&column.full_name).ok_or_else(|| Refusal {
            sqlstate: "XX000",
            message: format!("pgveil: no key is loaded for column {}", column.full_name),
        })
    }

    /// Renders a rewrite's edits into the SQL the server will see.
    pub fn render(&self, sql: &str, edits: &[sql::Edit]) -> Result<String, Refusal> {
        sql::apply(sql, edits, |kind| self.render_edit(kind))
    }

    fn render_edit(&self, kind: &EditKind) -> Result<String, Refusal> {
        match kind {
            EditKind::Text(t) => Ok(t.clone()),
            EditKind::Encrypt { column, value } => {
                let cipher = self.cipher(column)?;
                let mut env = Vec::new();
                cipher
                    .encrypt(value.as_bytes(), Format::Text, &mut env)
                    .inspect(|_| crate::admin::metrics().encrypted(&column.full_name))
                    .map_err(crypto_refusal)?;
                Ok(bytea_literal(&env))
            }
            EditKind::MatchList { column, value } => {
                let cipher = self.cipher(column)?;
                let envs = cipher
                    .search_envelopes(value.as_bytes(), Format::Text)
                    .map_err(crypto_refusal)?;
                let items: Vec<String> = envs.iter().map(|(_, e)| bytea_literal(e)).collect();
                Ok(format!("ARRAY[{}]::bytea[]", items.join(",")))
            }
            EditKind::MatchParam { index, column } => Ok(match self.match_usage(column) {
                ParamUsage::MatchOne => format!("ARRAY[${index}::bytea]"),
                _ => format!("${index}::bytea[]"),
            }),
        }
    }

    /// How an equality parameter of a searchable column is sent under this
    /// snapshot's keys: one envelope while the column has one live key
    /// version, an array of them (one per version) during a rotation.
    pub fn match_usage(&self, column: &ProtectedColumn) -> ParamUsage {
        match self.ciphers.get(&column.full_name) {
            Some(c) if c.live_versions() == 1 => ParamUsage::MatchOne,
            _ => ParamUsage::MatchArray,
        }
    }

    /// Parameter targets as this snapshot renders them: equality operands
    /// take the form [`Snapshot::match_usage`] decides.
    pub fn bind_targets(&self, targets: &[sql::ParamTarget]) -> Vec<sql::ParamTarget> {
        targets
            .iter()
            .map(|t| match t.usage {
                ParamUsage::MatchArray => sql::ParamTarget {
                    usage: self.match_usage(&t.column),
                    ..t.clone()
                },
                _ => t.clone(),
            })
            .collect()
    }
}

/// Whether every statement in `sql` is DDL. DDL naming a table the catalog
/// does not know yet may pass (it is how the table comes to exist); anything
/// else could write plaintext into a column meant to be encrypted.
fn only_ddl(sql: &str) -> bool {
    use sqlparser::ast::Statement;
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    match sqlparser::parser::Parser::parse_sql(&dialect, sql) {
        Ok(stmts) => stmts.iter().all(|s| {
            matches!(
                s,
                Statement::CreateTable(_)
                    | Statement::AlterTable { .. }
                    | Statement::Drop { .. }
                    | Statement::CreateIndex(_)
                    | Statement::Comment { .. }
                    | Statement::Grant { .. }
                    | Statement::Revoke { .. }
            ) && !matches!(s, Statement::CreateTable(t) if t.query.is_some())
        }),
        Err(_) => false,
    }
}

/// A crypto error as a refusal (it names the column, never the value).
pub fn crypto_refusal(e: crate::crypto::CryptoError) -> Refusal {
    Refusal {
        sqlstate: e.sqlstate(),
        message: e.to_string(),
    }
}

/// `'\x0102..'::bytea`.
fn bytea_literal(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2 + 12);
    s.push_str("'\\x");
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s.push_str("'::bytea");
    s
}

/// A statement the server runs only to fail with pgveil's refusal, so the
/// error reaches the client in order and the server's transaction state
/// matches what the client was told (an error aborts a transaction block).
pub fn refusal_sql(refusal: &Refusal) -> String {
    let code: String = refusal
        .sqlstate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let message = refusal.message.replace('\'', "''").replace('$', "");
    format!(
        "DO $pgveil$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{message}'; END$pgveil$"
    )
}
