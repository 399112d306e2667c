//! Policy checks against the live schema: does each column exist, and is an
//! encrypted column really `bytea`?

use super::check::Problem;
use super::column::{ColumnPolicy, QualifiedName};
use crate::config::Config;

/// Why the live schema could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LiveCheckError {
    /// Connecting or querying failed.
    #[error("pgveil: cannot read the schema from {addr} as {user}: {source}")]
    Db {
        /// The upstream address.
        addr: String,
        /// The catalog user.
        user: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// `[catalog] password_env` names a variable that is not set.
    #[error("pgveil: [catalog] password_env names {0}, which is not set")]
    MissingPassword(String),
}

/// Compares every policy with the upstream catalog.
pub async fn check_live(config: &Config, text: &str) -> Result<Vec<Problem>, LiveCheckError> {
    let cat = &config.catalog;
    let (host, port) = config
        .proxy
        .upstream
        .rsplit_once(':')
        .unwrap_or((config.proxy.upstream.as_str(), "5432"));
    let mut pg = tokio_postgres::Config::new();
    pg.host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(port.parse().unwrap_or(5432))
        .user(&cat.user)
        .dbname(&cat.database)
        .application_name("pgveil check")
        .connect_timeout(config.proxy.connect_timeout);
    if let Some(var) = &cat.password_env {
        let pw = std::env::var(var).map_err(|_| LiveCheckError::MissingPassword(var.clone()))?;
        pg.password(pw);
    }
    let err = |source| LiveCheckError::Db {
        addr: config.proxy.upstream.clone(),
        user: cat.user.clone(),
        source,
    };
    let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(err)?;
    let driver = tokio::spawn(conn);
    let stmt = client
        .prepare(
            "SELECT c.relkind::text, \
                    (SELECT t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                      WHERE a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relname = $2",
        )
        .await
        .map_err(err)?;
    let mut problems = Vec::new();
    for p in &config.columns {
        let Ok(name) = QualifiedName::of(p) else {
            continue; // reported by the static check
        };
        let row = client
            .query_opt(&stmt, &[&name.schema, &name.table, &name.column])
            .await
            .map_err(err)?;
        let message = match row {
            None => Some(format!(
                "table {}.{} does not exist",
                name.schema, name.table
            )),
            Some(row) => match row.get::<_, Option<String>>(1) {
                None => Some(format!("column {name} does not exist")),
                Some(ty) if p.encrypt.encrypts() && ty != "bytea" => Some(format!(
                    "column {name} is {ty} in the database but encrypted columns must be bytea; \
                     migrate it with `pgveil migrate encrypt` or set encrypt = \"none\""
                )),
                Some(_) => None,
            },
        };
        if let Some(message) = message {
            problems.push(problem(p, text, message));
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(problems)
}

fn problem(p: &ColumnPolicy, text: &str, message: String) -> Problem {
    let line = text
        .get(..p.table.span().start)
        .map(|t| t.matches('\n').count() + 1);
    Problem {
        line,
        subject: format!("{}.{}", p.table.get_ref(), p.column),
        message,
    }
}
