//! `pgveil demo`: the whole product on one machine in one command.
//!
//! Starts a throwaway PostgreSQL, loads the hotel fixtures (synthetic
//! guests and stays), starts pgveil in front of it and prints how to
//! connect. Ctrl-C stops both and deletes the data directory.

use crate::config::Config;
use crate::server::{runtime, wait_for_shutdown_signal, Proxy};
use crate::tempdb::{TempDb, TempDbError};

/// The hotel's schema and synthetic rows, embedded so the demo runs from
/// any directory.
pub const HOTEL_SQL: &str = include_str!("../fixtures/hotel.sql");

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The throwaway database failed.
    #[error(transparent)]
    Db(#[from] TempDbError),
    /// The proxy could not start.
    #[error("pgveil: cannot start the proxy: {0}")]
    Proxy(#[from] std::io::Error),
}

/// Runs the demo until Ctrl-C.
pub fn run(port: u16) -> Result<(), DemoError> {
    eprintln!("starting a throwaway PostgreSQL ...");
    let db = TempDb::start()?;
    db.psql(HOTEL_SQL)?;
    let mut config = Config::default();
    config.proxy.listen = format!("127.0.0.1:{port}");
    config.proxy.upstream = db.addr();
    let rt = runtime(config.proxy.workers)?;
    rt.block_on(async {
        let proxy = Proxy::bind(config).await?;
        let addr = proxy.local_addr();
        println!("pgveil demo is running.");
        println!("  through pgveil: psql \"host={} port={} user=postgres dbname=postgres\"", addr.ip(), addr.port());
        println!("  direct to PostgreSQL (to compare): psql \"host=127.0.0.1 port={} user=postgres dbname=postgres\"", db.port());
        println!("  try: SELECT name, phone, id_number FROM guests LIMIT 5;");
        println!("Press Ctrl-C to stop; the demo data is deleted on exit.");
        wait_for_shutdown_signal().await?;
        proxy.shutdown();
        Ok::<(), DemoError>(())
    })?;
    drop(db);
    eprintln!("stopped; demo data removed.");
    Ok(())
}
