//! The migration state kept in the database, in `pgveil.migrations`.
//!
//! One row per column that pgveil has converted or is converting:
//!
//! * `encrypting` — the column is `bytea` and holds both envelopes and
//!   legacy plaintext (the UTF-8 text form of the original type, or raw
//!   bytes for a `bytea` column). This is the mark the read path uses to
//!   accept a value that is not an envelope; in any other column such a
//!   value is an error.
//! * `encrypted` — every value is an envelope; `original_type` is what
//!   `migrate decrypt` restores.
//! * `decrypting` — like `encrypting`, on the way back.
//!
//! The state changes in the same transaction as the type change it
//! describes, so a kill can never leave the two disagreeing.

use super::plan::Target;
use super::MigrateError;
use tokio_postgres::GenericClient;

/// Where a column stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Mid-way from plaintext to envelopes.
    Encrypting,
    /// All envelopes.
    Encrypted,
    /// Mid-way from envelopes back to plaintext.
    Decrypting,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Encrypting => "encrypting",
            State::Encrypted => "encrypted",
            State::Decrypting => "decrypting",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "encrypting" => Some(State::Encrypting),
            "encrypted" => Some(State::Encrypted),
            "decrypting" => Some(State::Decrypting),
            _ => None,
        }
    }
}

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS pgveil; \
    CREATE TABLE IF NOT EXISTS pgveil.migrations ( \
      table_schema text NOT NULL, table_name text NOT NULL, column_name text NOT NULL, \
      state text NOT NULL CHECK (state IN ('encrypting', 'encrypted', 'decrypting')), \
      original_type text NOT NULL, \
      updated_at timestamptz NOT NULL DEFAULT now(), \
      PRIMARY KEY (table_schema, table_name, column_name)); \
    ALTER TABLE pgveil.migrations ADD COLUMN IF NOT EXISTS legacy_column text";

/// Creates `pgveil.migrations` if it does not exist.
pub async fn ensure(client: &impl GenericClient, t: &Target) -> Result<(), MigrateError> {
    client
        .batch_execute(CREATE)
        .await
        .map_err(|e| t.db_error("creating pgveil.migrations", &e))
}

/// The column's state and original type, if pgveil has recorded one.
pub async fn get(
    client: &impl GenericClient,
    t: &Target,
) -> Result<Option<(State, String)>, MigrateError> {
    let err = |e| t.db_error("reading pgveil.migrations", &e);
    let exists: bool = client
        .query_one("SELECT to_regclass('pgveil.migrations') IS NOT NULL", &[])
        .await
        .map_err(err)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT state, original_type FROM pgveil.migrations \
              WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            &[&t.name.schema, &t.name.table, &t.name.column],
        )
        .await
        .map_err(err)?;
    Ok(row.and_then(|r| State::parse(r.get(0)).map(|s| (s, r.get(1)))))
}

/// Records `state` (and the original type) for the column.
pub async fn set(
    client: &impl GenericClient,
    t: &Target,
    state: State,
    original_type: &str,
) -> Result<(), MigrateError> {
    client
        .execute(
            "INSERT INTO pgveil.migrations (table_schema, table_name, column_name, state, original_type) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (table_schema, table_name, column_name) \
             DO UPDATE SET state = EXCLUDED.state, original_type = EXCLUDED.original_type, updated_at = now()",
            &[&t.name.schema, &t.name.table, &t.name.column, &state.as_str(), &original_type],
        )
        .await
        .map_err(|e| t.db_error("writing pgveil.migrations", &e))?;
    Ok(())
}

/// The hidden column of an online encryption in progress, if any.
pub async fn legacy(
    client: &impl GenericClient,
    t: &Target,
) -> Result<Option<String>, MigrateError> {
    legacy_of(client, &t.name)
        .await
        .map_err(|e| t.db_error("reading pgveil.migrations", &e))
}

/// [`legacy`] by name, for a column that cannot be resolved yet (it is
/// its hidden twin between the two steps of an online move).
pub async fn legacy_of(
    client: &impl GenericClient,
    name: &crate::policy::QualifiedName,
) -> Result<Option<String>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgveil.migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    // `to_jsonb`: the column is absent from tables made before online moves.
    Ok(client
        .query_opt(
            "SELECT to_jsonb(m)->>'legacy_column' FROM pgveil.migrations m \
              WHERE table_schema = $1 AND table_name = $2 AND column_name = $3 \
                AND state = 'encrypting'",
            &[&name.schema, &name.table, &name.column],
        )
        .await?
        .and_then(|r| r.get(0)))
}

/// Records (or, with `None`, forgets) the hidden column of an online
/// encryption; call after [`set`].
pub async fn set_legacy(
    client: &impl GenericClient,
    t: &Target,
    legacy: Option<&str>,
) -> Result<(), MigrateError> {
    client
        .execute(
            "UPDATE pgveil.migrations SET legacy_column = $4, updated_at = now() \
              WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            &[&t.name.schema, &t.name.table, &t.name.column, &legacy],
        )
        .await
        .map_err(|e| t.db_error("writing pgveil.migrations", &e))?;
    Ok(())
}

/// Forgets the column (it is plaintext again).
pub async fn clear(client: &impl GenericClient, t: &Target) -> Result<(), MigrateError> {
    client
        .execute(
            "DELETE FROM pgveil.migrations \
              WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            &[&t.name.schema, &t.name.table, &t.name.column],
        )
        .await
        .map_err(|e| t.db_error("writing pgveil.migrations", &e))?;
    Ok(())
}
