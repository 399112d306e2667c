//! Policy checks against the live schema: does each column exist, and is an
//! encrypted column really `bytea`?

use super::check::Problem;
use super::column::{ColumnPolicy, QualifiedName};
use crate::catalog::CatalogError;
use crate::config::Config;

/// Compares every policy with the upstream catalog.
pub async fn check_live(config: &Config, text: &str) -> Result<Vec<Problem>, CatalogError> {
    let client = crate::catalog::connect(config).await?;
    let err = |source| CatalogError::Db {
        addr: config.proxy.upstream.clone(),
        user: config.catalog.user.clone(),
        source,
    };
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
