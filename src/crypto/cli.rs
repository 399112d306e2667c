//! `pgveil keyring …`: the operator's commands for the keyring.
//!
//! `main` parses `pgveil keyring <command> --config FILE`, reads the
//! `[keyring]` section and calls [`run`]. Output goes to the writer given,
//! so tests can check it; errors are returned for `main` to print.

use std::io::Write;

use super::config::KeyringConfig;
use super::error::{CryptoError, Result};
use super::keyring::Keyring;
use super::master::MasterKey;
use super::store::KeyState;

/// The keyring subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KeyringCommand {
    /// Create a new keyring with key version 1 active (refuses to overwrite).
    Init,
    /// Add a new active key version; the old one becomes decrypt-only.
    Rotate,
    /// Show every key version and its state.
    List,
    /// Erase a decrypt-only key version: its data becomes unreadable forever.
    Destroy {
        /// The key version to destroy.
        #[arg(long)]
        version: u32,
        /// Confirm that the data under this version may be lost.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs one keyring command with the `[keyring]` settings `cfg`, writing
/// what it did to `out`.
pub fn run(cmd: &KeyringCommand, cfg: &KeyringConfig, out: &mut dyn Write) -> Result<()> {
    let master = MasterKey::load(cfg)?;
    run_with_master(cmd, cfg, &master, out)
}

/// [`run`] with the master key already loaded (tests, and callers that
/// obtained it otherwise).
pub fn run_with_master(
    cmd: &KeyringCommand,
    cfg: &KeyringConfig,
    master: &MasterKey,
    out: &mut dyn Write,
) -> Result<()> {
    let dir = cfg.dir.as_path();
    let io = |source| CryptoError::Io {
        action: "write output to",
        path: "stdout".into(),
        source,
    };
    match cmd {
        KeyringCommand::Init => {
            let kr = Keyring::init(dir, master, None)?;
            writeln!(
                out,
                "pgveil: created keyring in {} with active key version {}",
                dir.display(),
                kr.active_version()
            )
            .map_err(io)?;
        }
        KeyringCommand::Rotate => {
            let mut kr = Keyring::open(dir, master)?;
            let old = kr.active_version();
            let new = kr.rotate()?;
            writeln!(
                out,
                "pgveil: key version {new} is now active; version {old} is decrypt-only. \
                 Restart or reload pgveil so new values use version {new}."
            )
            .map_err(io)?;
        }
        KeyringCommand::List => {
            let kr = Keyring::open(dir, master)?;
            if let Some(label) = kr.label() {
                writeln!(out, "# {label}").map_err(io)?;
            }
            writeln!(
                out,
                "{:>7}  {:<12}  {:<20}  DESTROYED",
                "VERSION", "STATE", "CREATED"
            )
            .map_err(io)?;
            for v in kr.versions() {
                writeln!(
                    out,
                    "{:>7}  {:<12}  {:<20}  {}",
                    v.version,
                    v.state.name(),
                    utc(v.created_unix),
                    v.destroyed_unix.map_or_else(|| "-".to_string(), utc)
                )
                .map_err(io)?;
            }
        }
        KeyringCommand::Destroy { version, yes } => {
            let mut kr = Keyring::open(dir, master)?;
            // Check what would happen before asking for confirmation, so
            // the message is about the real problem.
            match kr.versions().find(|v| v.version == *version) {
                None => return Err(CryptoError::NoSuchVersion { version: *version }),
                Some(v) if v.state == KeyState::Active => {
                    return Err(CryptoError::DestroyActive { version: *version })
                }
                Some(v) if v.state == KeyState::Destroyed => {
                    return Err(CryptoError::AlreadyDestroyed { version: *version })
                }
                Some(_) => {}
            }
            if !yes {
                return Err(CryptoError::ConfirmationRequired { version: *version });
            }
            kr.destroy(*version)?;
            writeln!(
                out,
                "pgveil: key version {version} destroyed; values encrypted under it can no \
                 longer be decrypted. Destroy backups of the keyring file as well."
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SSZ` without a date library.
fn utc(secs: u64) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = crate::crypto::civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path) -> KeyringConfig {
        KeyringConfig {
            dir: dir.join("keyring"),
            master_key_file: None,
        }
    }

    fn run_ok(cmd: KeyringCommand, c: &KeyringConfig, m: &MasterKey) -> String {
        let mut out = Vec::new();
        run_with_master(&cmd, c, m, &mut out).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn init_rotate_list_destroy() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = cfg(d.path());
        let m = MasterKey::from_bytes([3; 32]);
        assert!(run_ok(KeyringCommand::Init, &c, &m).contains("active key version 1"));
        let err = run_with_master(&KeyringCommand::Init, &c, &m, &mut Vec::new())
            .expect_err("second init must refuse");
        assert!(matches!(err, CryptoError::KeyringExists { .. }), "{err}");
        assert!(run_ok(KeyringCommand::Rotate, &c, &m).contains("key version 2 is now active"));
        let list = run_ok(KeyringCommand::List, &c, &m);
        assert!(list.contains("      1  decrypt-only"), "{list}");
        assert!(list.contains("      2  active"), "{list}");

        let destroy = |version, yes| KeyringCommand::Destroy { version, yes };
        let err =
            run_with_master(&destroy(1, false), &c, &m, &mut Vec::new()).expect_err("no --yes");
        assert!(err.to_string().contains("--yes"), "{err}");
        let err = run_with_master(&destroy(2, true), &c, &m, &mut Vec::new()).expect_err("active");
        assert!(err.to_string().contains("rotate"), "{err}");
        let err = run_with_master(&destroy(9, true), &c, &m, &mut Vec::new()).expect_err("unknown");
        assert!(matches!(err, CryptoError::NoSuchVersion { version: 9 }));
        assert!(run_ok(destroy(1, true), &c, &m).contains("destroyed"));
        let err = run_with_master(&destroy(1, true), &c, &m, &mut Vec::new()).expect_err("twice");
        assert!(matches!(err, CryptoError::AlreadyDestroyed { version: 1 }));
        let list = run_ok(KeyringCommand::List, &c, &m);
        assert!(list.contains("      1  destroyed"), "{list}");
        let text = std::fs::read_to_string(c.dir.join("keyring.toml")).expect("read");
        assert_eq!(text.matches("wrapped_key").count(), 1, "{text}");
    }

    #[test]
    fn wrong_master_key_is_a_clear_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = cfg(d.path());
        run_ok(KeyringCommand::Init, &c, &MasterKey::from_bytes([3; 32]));
        let err = run_with_master(
            &KeyringCommand::List,
            &c,
            &MasterKey::from_bytes([4; 32]),
            &mut Vec::new(),
        )
        .expect_err("wrong key");
        assert!(
            matches!(err, CryptoError::MasterKeyMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn commands_on_missing_keyring_say_init() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = run_with_master(
            &KeyringCommand::List,
            &cfg(d.path()),
            &MasterKey::from_bytes([3; 32]),
            &mut Vec::new(),
        )
        .expect_err("missing");
        assert!(err.to_string().contains("pgveil keyring init"), "{err}");
    }

    #[test]
    fn run_reads_key_file_from_config() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let key = d.path().join("master.key");
        std::fs::write(&key, [5u8; 32]).expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let c = KeyringConfig {
            dir: d.path().join("kr"),
            master_key_file: Some(key.clone()),
        };
        run(&KeyringCommand::Init, &c, &mut Vec::new()).expect("init");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = run(&KeyringCommand::List, &c, &mut Vec::new()).expect_err("0644");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn clap_parses_destroy() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: KeyringCommand,
        }
        let cli = Cli::try_parse_from(["x", "destroy", "--version", "3", "--yes"]).expect("parse");
        assert_eq!(
            cli.cmd,
            KeyringCommand::Destroy {
                version: 3,
                yes: true
            }
        );
        assert!(Cli::try_parse_from(["x", "destroy"]).is_err());
    }
}
