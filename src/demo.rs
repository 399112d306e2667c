//! `pgveil demo`: the whole product on one machine in one command.
//!
//! Starts a throwaway PostgreSQL, loads the hotel fixtures (synthetic
//! guests and stays), encrypts the protected guest columns in place with
//! `pgveil migrate encrypt` under the labelled DEMO keyring, creates one
//! login user per policy role, starts pgveil in front of it and prints how
//! to connect as each. Ctrl-C stops both and deletes the data directory.

use crate::config::Config;
use crate::migrate::{MigrateArgs, MigrateCommand};
use crate::server::{runtime, wait_for_shutdown_signal, Proxy};
use crate::tempdb::{TempDb, TempDbError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The hotel's schema and synthetic rows, embedded so the demo runs from
/// any directory.
pub const HOTEL_SQL: &str = include_str!("../fixtures/hotel.sql");

/// The demo's column policies and roles.
pub const DEMO_POLICY: &str = include_str!("../fixtures/demo-policy.toml");

/// The DEMO keyring and its (public) master key: never for real data.
const DEMO_KEYRING: &str = include_str!("../keyring/keyring.toml");
const DEMO_MASTER_KEY: &str = include_str!("../keyring/demo-master.key");

/// Login users, one per policy role, and the PostgreSQL role each is in.
pub const DEMO_USERS: [(&str, &str, &str); 4] = [
    (
        "alice",
        "frontdesk",
        "front desk: sees level 2 and below in the clear, masks above",
    ),
    ("bob", "managers", "manager: sees everything in the clear"),
    (
        "carol",
        "analysts",
        "analyst: pseudonyms for names and ID numbers, masks elsewhere",
    ),
    (
        "dave",
        "auditors",
        "auditor: denied ID and card numbers, masks elsewhere",
    ),
];

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The throwaway database failed.
    #[error(transparent)]
    Db(#[from] TempDbError),
    /// The proxy could not start.
    #[error("pgveil: cannot start the proxy: {0}")]
    Proxy(#[from] std::io::Error),
    /// Preparing the encrypted demo data failed.
    #[error("pgveil: cannot prepare the demo data: {0}")]
    Setup(String),
}

/// Runs the demo until Ctrl-C.
pub fn run(port: u16) -> Result<(), DemoError> {
    eprintln!("starting a throwaway PostgreSQL ...");
    let db = TempDb::start()?;
    db.psql(HOTEL_SQL)?;
    db.psql(&roles_sql())?;
    let work = tempfile::tempdir().map_err(DemoError::Proxy)?;
    let config_path = write_config(work.path(), &db, port)?;
    eprintln!("encrypting the protected guest columns (pgveil migrate encrypt --all) ...");
    crate::migrate::run(MigrateCommand::Encrypt(MigrateArgs {
        config: config_path.clone(),
        table: None,
        column: None,
        all: true,
        batch_size: 1000,
        dry_run: false,
        max_rewrite_mb: 1024,
        // Nothing reads the table yet, and `SELECT *` keeps its order.
        in_place: true,
    }))
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    let config = Config::load(&config_path).map_err(|e| DemoError::Setup(e.to_string()))?;
    let rt = runtime(config.proxy.workers)?;
    rt.block_on(async {
        let proxy = Proxy::bind(config).await?;
        let addr = proxy.local_addr();
        println!("pgveil demo is running (DEMO keyring: never use it for real data).");
        for (user, _, what) in DEMO_USERS {
            println!(
                "  {what}:\n    psql \"host={} port={} user={user} dbname=postgres\"",
                addr.ip(),
                addr.port()
            );
        }
        println!(
            "  the raw table, direct to PostgreSQL (ciphertext):\n    psql \"host=127.0.0.1 port={} user=postgres dbname=postgres\"",
            db.port()
        );
        println!("  try: SELECT name, phone, id_number, email, birth_date FROM guests ORDER BY id LIMIT 5;");
        println!("Press Ctrl-C to stop; the demo data is deleted on exit.");
        wait_for_shutdown_signal().await?;
        proxy.shutdown();
        Ok::<(), DemoError>(())
    })?;
    drop(db);
    eprintln!("stopped; demo data removed.");
    Ok(())
}

fn roles_sql() -> String {
    let mut sql = String::from(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO PUBLIC;\n\
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;\n",
    );
    for (user, role, _) in DEMO_USERS {
        sql.push_str(&format!(
            "CREATE ROLE {role} NOLOGIN;\nCREATE ROLE {user} LOGIN IN ROLE {role};\n"
        ));
    }
    sql
}

/// Writes the demo keyring copy, a 0600 master-key file and the config.
fn write_config(dir: &Path, db: &TempDb, port: u16) -> Result<std::path::PathBuf, DemoError> {
    let io = |e: std::io::Error| DemoError::Setup(e.to_string());
    let keyring = dir.join("keyring");
    std::fs::create_dir(&keyring).map_err(io)?;
    std::fs::write(keyring.join("keyring.toml"), DEMO_KEYRING).map_err(io)?;
    let key = dir.join("demo-master.key");
    std::fs::write(&key, DEMO_MASTER_KEY).map_err(io)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\n\n\
         [admin]\nlisten = \"\"\n\n\
         [keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\n{DEMO_POLICY}",
        db.addr(),
        keyring.display(),
        key.display()
    );
    let path = dir.join("pgveil.toml");
    std::fs::write(&path, config).map_err(io)?;
    Ok(path)
}
