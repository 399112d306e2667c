//! The catalog's connections to the server: the one it loads from (also
//! used by `pgveil migrate`), and the one each pgveil keeps listening for
//! `pgveil migrate`'s schema changes, answering each once the reload it
//! caused is in force.

use super::CatalogError;
use crate::config::Config;
use std::sync::Arc;
use tokio::sync::Notify;

/// Opens the catalog connection described by `[catalog]`.
pub async fn connect(config: &Config) -> Result<tokio_postgres::Client, CatalogError> {
    connect_with(config, "pgveil catalog", None)
        .await
        .map(|(client, _)| client)
}

/// The channel `pgveil migrate` notifies when it changes a protected
/// table's columns, so running pgveils reload their catalog at once.
pub const CHANGES_CHANNEL: &str = "pgveil_catalog";

/// The channel pgveil answers on once a reload is in force: the payload
/// is the token of the [`CHANGES_CHANNEL`] notification that caused it,
/// so `pgveil migrate` can wait exactly as long as every running pgveil
/// needs.
pub const ACK_CHANNEL: &str = "pgveil_catalog_ack";

/// The `application_name` of the listening connection, by which `pgveil
/// migrate` counts the pgveils whose acknowledgement it waits for.
pub const LISTENER_NAME: &str = "pgveil catalog listener";

/// What a connection task does with each notification: the sending
/// backend's process id, and the payload.
pub type OnNotification = Box<dyn Fn(i32, &str) + Send + Sync>;

/// Tokens of change notifications received and not yet acknowledged:
/// the listener adds them, the reload loop takes them when a load starts
/// (so the load sees the change) and hands them back once it is in force.
pub type PendingTokens = Arc<std::sync::Mutex<Vec<String>>>;

/// Keeps a connection listening on [`CHANGES_CHANNEL`]: each notification
/// keeps its token in `pending` and signals `changed`; each batch of
/// tokens the reload loop sends on `reloaded` is answered on
/// [`ACK_CHANNEL`]. Returns when the connection ends.
pub async fn listen(
    config: &Config,
    changed: Arc<Notify>,
    pending: PendingTokens,
    reloaded: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) -> Result<(), CatalogError> {
    let on: OnNotification = Box::new(move |_, token| {
        if !token.is_empty() {
            if let Ok(mut p) = pending.lock() {
                p.push(token.to_owned());
            }
        }
        changed.notify_one();
    });
    let (client, mut conn) = connect_with(config, LISTENER_NAME, Some(on)).await?;
    let fail = |source| CatalogError::Db {
        addr: config.proxy.upstream.clone(),
        user: config.catalog.user.clone(),
        source,
    };
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await
        .map_err(fail)?;
    loop {
        tokio::select! {
            _ = &mut conn => return Ok(()),
            tokens = reloaded.recv() => {
                let Some(tokens) = tokens else { return Ok(()) };
                for token in tokens {
                    client
                        .execute("SELECT pg_notify($1, $2)", &[&ACK_CHANNEL, &token])
                        .await
                        .map_err(fail)?;
                }
            }
        }
    }
}

/// Connects as the catalog user, for `pgveil migrate` too; the
/// connection task hands every notification's payload to `on`.
pub async fn connect_with(
    config: &Config,
    application_name: &str,
    on: Option<OnNotification>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), CatalogError> {
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
        .application_name(application_name)
        .connect_timeout(config.proxy.connect_timeout);
    if let Some(var) = &cat.password_env {
        let pw = std::env::var(var).map_err(|_| CatalogError::MissingPassword(var.clone()))?;
        pg.password(pw);
    }
    let fail = |source| CatalogError::Db {
        addr: config.proxy.upstream.clone(),
        user: cat.user.clone(),
        source,
    };
    // Same TLS settings as the sessions' upstream connections.
    match crate::tls::UpstreamTls::from_config(config)? {
        None => {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            Ok((client, tokio::spawn(drive(conn, on))))
        }
        Some(tls) => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = pg.connect(tls.postgres_connector()).await.map_err(fail)?;
            Ok((client, tokio::spawn(drive(conn, on))))
        }
    }
}

/// Runs a connection to its end, passing notifications on.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, on: Option<OnNotification>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                if let Some(on) = &on {
                    on(n.process_id(), n.payload());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "catalog connection failed");
                return;
            }
            None => return,
        }
    }
}
