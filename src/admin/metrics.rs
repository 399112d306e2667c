//! The counters behind `/metrics`, in Prometheus text format.
//!
//! One process-wide registry (`prometheus-client`). The relay never touches
//! it per message: a session adds up plain integers in its own [`Tally`]
//! and folds them into the shared counters at ReadyForQuery and when it
//! ends. Per-column counters are created once per column name and found
//! again by a hash lookup on `&str`, so counting allocates nothing after
//! the first use of a column.

use dashmap::DashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Column {
    column: String,
}

/// The counters of one protected column. A result plan keeps a copy (the
/// counters are shared handles), so counting a cell is one atomic add
/// instead of a lookup by column name.
#[derive(Clone, Debug, Default)]
pub struct ColumnCounters {
    encrypted: Counter,
    decrypted: Counter,
    masked: Counter,
}

impl ColumnCounters {
    /// One value decrypted.
    pub fn decrypted(&self) {
        self.decrypted.inc();
    }

    /// One value shown masked or as NULL.
    pub fn masked(&self) {
        self.masked.inc();
    }
}

/// Every metric pgveil exports. Fields are public so call sites read as
/// one line (`metrics().plan_cache_hits.inc()`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Client connections accepted.
    pub clients_accepted: Counter,
    /// Client connections open now.
    pub clients_active: Gauge,
    /// Clients refused over `max_client_connections`.
    pub clients_refused_limit: Counter,
    /// Clients refused because `[tls] require` and they did not use TLS.
    pub clients_refused_tls: Counter,
    /// Upstream connections opened.
    pub upstream_opened: Counter,
    /// Upstream connections open now.
    pub upstream_active: Gauge,
    /// Upstream connections that could not be opened.
    pub upstream_failed: Counter,
    /// Statements relayed as bytes.
    pub statements_relayed: Counter,
    /// Statements rewritten (encrypted literals, parameters, COPY).
    pub statements_rewritten: Counter,
    /// Statements refused by pgveil's SQL analysis.
    pub statements_refused: Counter,
    /// Results withheld by policy (`deny`, bulk limits).
    pub statements_blocked: Counter,
    /// Plan cache hits.
    pub plan_cache_hits: Counter,
    /// Plan cache misses (statements parsed).
    pub plan_cache_misses: Counter,
    bytes_from_client: Counter,
    bytes_from_server: Counter,
    overhead: Histogram,
    /// Sessions pgveil closed at shutdown (57P01).
    pub sessions_closed_shutdown: Counter,
    /// Sessions pgveil closed after `idle_timeout` (57P05).
    pub sessions_closed_idle: Counter,
    /// Configuration reloads applied.
    pub reloads_ok: Counter,
    /// Configuration reloads rejected (old configuration kept).
    pub reloads_rejected: Counter,
    encryptions: Family<Column, Counter>,
    decryptions: Family<Column, Counter>,
    masks: Family<Column, Counter>,
    columns: DashMap<String, ColumnCounters>,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("pgveil");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let clients_accepted = counter(
            &mut registry,
            "client_connections",
            "Client connections accepted",
        );
        let clients_active = gauge(
            &mut registry,
            "client_connections_active",
            "Client connections open now",
        );
        let refused = Family::<Reason, Counter>::default();
        registry.register(
            "client_connections_refused",
            "Client connections refused, by reason",
            refused.clone(),
        );
        let upstream_opened = counter(
            &mut registry,
            "upstream_connections",
            "Connections opened to the PostgreSQL server",
        );
        let upstream_active = gauge(
            &mut registry,
            "upstream_connections_active",
            "Connections to the PostgreSQL server open now",
        );
        let upstream_failed = counter(
            &mut registry,
            "upstream_connect_failures",
            "Connections to the PostgreSQL server that could not be opened",
        );
        let statements = Family::<Outcome, Counter>::default();
        registry.register(
            "statements",
            "Statements (Query and Parse messages) by outcome: relayed, rewritten, refused, blocked",
            statements.clone(),
        );
        let plans = Family::<Outcome, Counter>::default();
        registry.register(
            "plan_cache",
            "Plan cache lookups by outcome: hit or miss",
            plans.clone(),
        );
        let bytes = Family::<Direction, Counter>::default();
        registry.register("bytes", "Bytes relayed, by direction", bytes.clone());
        // 1 µs .. ~1 s in powers of two.
        let overhead = Histogram::new(exponential_buckets(1e-6, 2.0, 21));
        registry.register(
            "statement_overhead_seconds",
            "Time pgveil's handlers spent per statement round trip (up to ReadyForQuery): \
             planning, encryption, decryption, masking; network time excluded",
            overhead.clone(),
        );
        let closed = Family::<Reason, Counter>::default();
        registry.register(
            "sessions_closed_by_pgveil",
            "Sessions pgveil closed itself, by reason",
            closed.clone(),
        );
        let reloads = Family::<Outcome, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome: applied or rejected",
            reloads.clone(),
        );
        let encryptions = Family::<Column, Counter>::default();
        registry.register(
            "encryptions",
            "Values encrypted, by protected column",
            encryptions.clone(),
        );
        let decryptions = Family::<Column, Counter>::default();
        registry.register(
            "decryptions",
            "Values decrypted, by protected column",
            decryptions.clone(),
        );
        let masks = Family::<Column, Counter>::default();
        registry.register(
            "masks_applied",
            "Values shown masked (or as NULL) instead of in the clear, by protected column",
            masks.clone(),
        );
        let outcome =
            |f: &Family<Outcome, Counter>, o| f.get_or_create_owned(&Outcome { outcome: o });
        let reason = |f: &Family<Reason, Counter>, r| f.get_or_create_owned(&Reason { reason: r });
        let direction = |d| bytes.get_or_create_owned(&Direction { direction: d });
        Metrics {
            clients_accepted,
            clients_active,
            clients_refused_limit: reason(&refused, "max_client_connections"),
            clients_refused_tls: reason(&refused, "tls_required"),
            upstream_opened,
            upstream_active,
            upstream_failed,
            statements_relayed: outcome(&statements, "relayed"),
            statements_rewritten: outcome(&statements, "rewritten"),
            statements_refused: outcome(&statements, "refused"),
            statements_blocked: outcome(&statements, "blocked"),
            plan_cache_hits: outcome(&plans, "hit"),
            plan_cache_misses: outcome(&plans, "miss"),
            bytes_from_client: direction("client_to_server"),
            bytes_from_server: direction("server_to_client"),
            overhead,
            sessions_closed_shutdown: reason(&closed, "shutdown"),
            sessions_closed_idle: reason(&closed, "idle_timeout"),
            reloads_ok: outcome(&reloads, "applied"),
            reloads_rejected: outcome(&reloads, "rejected"),
            encryptions,
            decryptions,
            masks,
            columns: DashMap::new(),
            registry,
        }
    }

    /// The registry in Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The counters of `column`, for a plan to keep.
    pub fn column(&self, column: &str) -> ColumnCounters {
        let mut counters = None;
        self.with_column(column, |c| counters = Some(c.clone()));
        counters.unwrap_or_default()
    }

    fn with_column(&self, column: &str, f: impl FnOnce(&ColumnCounters)) {
        if let Some(c) = self.columns.get(column) {
            f(c.value());
            return;
        }
        let label = Column {
            column: column.to_owned(),
        };
        let counters = ColumnCounters {
            encrypted: self.encryptions.get_or_create_owned(&label),
            decrypted: self.decryptions.get_or_create_owned(&label),
            masked: self.masks.get_or_create_owned(&label),
        };
        f(&counters);
        self.columns.insert(label.column, counters);
    }

    /// One value of `column` encrypted.
    pub fn encrypted(&self, column: &str) {
        self.with_column(column, |c| {
            c.encrypted.inc();
        });
    }

    /// One value of `column` decrypted.
    pub fn decrypted(&self, column: &str) {
        self.with_column(column, |c| {
            c.decrypted.inc();
        });
    }

    /// One value of `column` shown masked or as NULL.
    pub fn masked(&self, column: &str) {
        self.with_column(column, |c| {
            c.masked.inc();
        });
    }
}

/// One session's counts since it last folded them into [`metrics`]: plain
/// integers, so the relay pays an add per read and nothing per message.
#[derive(Debug, Default)]
pub struct Tally {
    /// Bytes read from the client.
    pub from_client: u64,
    /// Bytes read from the server.
    pub from_server: u64,
    /// Statements relayed untouched by a session without protection.
    pub relayed: u64,
    /// Time spent in pgveil's handlers since the last ReadyForQuery.
    pub busy: Duration,
    /// A ReadyForQuery was relayed; fold once the current batch of server
    /// frames is handled, so its handler time counts toward this sample.
    pub statement_done: bool,
}

impl Tally {
    /// Folds the counts into the shared metrics; called at ReadyForQuery.
    /// The handler time since the previous one is one latency sample.
    pub fn fold_statement(&mut self) {
        let m = metrics();
        if !self.busy.is_zero() {
            m.overhead.observe(self.busy.as_secs_f64());
            self.busy = Duration::ZERO;
        }
        self.fold();
    }

    /// Folds the plain counts (not the latency) into the shared metrics.
    pub fn fold(&mut self) {
        let m = metrics();
        if self.from_client > 0 {
            m.bytes_from_client.inc_by(self.from_client);
            self.from_client = 0;
        }
        if self.from_server > 0 {
            m.bytes_from_server.inc_by(self.from_server);
            self.from_server = 0;
        }
        if self.relayed > 0 {
            m.statements_relayed.inc_by(self.relayed);
            self.relayed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = metrics();
        m.encrypted("public.t.phone");
        m.encrypted("public.t.phone");
        m.statements_refused.inc();
        let mut tally = Tally {
            from_client: 10,
            relayed: 1,
            busy: Duration::from_micros(3),
            ..Tally::default()
        };
        tally.fold_statement();
        let text = m.render();
        assert!(
            text.contains("pgveil_encryptions_total{column=\"public.t.phone\"}"),
            "{text}"
        );
        assert!(
            text.contains("pgveil_statements_total{outcome=\"refused\"}"),
            "{text}"
        );
        assert!(
            text.contains("pgveil_bytes_total{direction=\"client_to_server\"}"),
            "{text}"
        );
        assert!(
            text.contains("pgveil_statement_overhead_seconds_bucket"),
            "{text}"
        );
        assert_eq!(tally.from_client, 0);
    }
}
