//! The audit trail end to end: real drivers (tokio-postgres, psql) through
//! pgveil with `[audit]` on, then the trail checked with `pgveil audit
//! verify` as an operator would run it.

mod common;

use common::*;
use pgveil::config::Config;
use pgveil::server::Proxy;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const POLICY: &str = include_str!("../fixtures/demo-policy.toml");

/// The demo schema with encrypted columns (bytea) and the demo roles.
fn schema() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        db().psql(
            "CREATE TABLE guests (id int PRIMARY KEY, name bytea, id_number bytea, phone bytea, \
               email text, card_number bytea, address bytea, birth_date bytea, note text); \
             GRANT ALL ON guests TO PUBLIC; \
             CREATE ROLE frontdesk; CREATE ROLE managers; CREATE ROLE analysts; CREATE ROLE auditors; \
             CREATE ROLE fd_amy LOGIN IN ROLE frontdesk; CREATE ROLE mgr_ben LOGIN IN ROLE managers; \
             CREATE ROLE ana_cat LOGIN IN ROLE analysts; CREATE ROLE aud_dan LOGIN IN ROLE auditors;",
        )
        .expect("schema");
    });
}

/// A proxy with its own audit trail in a temporary directory.
struct Veiled {
    proxy: Proxy,
    dir: tempfile::TempDir,
    /// The active audit file.
    path: PathBuf,
    /// A config file naming the same keyring and audit path (for the CLI).
    config_file: PathBuf,
}

impl Veiled {
    fn start(audit_extra: &str) -> Veiled {
        Veiled::start_with(audit_extra, "", POLICY)
    }

    /// With `sections` (e.g. `[approvals]`) before the policy.
    fn start_with(audit_extra: &str, sections: &str, policy: &str) -> Veiled {
        schema();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("audit.jsonl");
        // Checkpoints by count only, unless a test asks for an interval:
        // no test depends on how fast the clock runs.
        let interval = if audit_extra.contains("checkpoint_interval") {
            ""
        } else {
            "checkpoint_interval = \"1h\"\n"
        };
        let head = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\
             [keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\
             [audit]\npath = \"{}\"\n{interval}{audit_extra}\n",
            db().addr(),
            demo_keyring_dir().display(),
            demo_master_key_file().display(),
            path.display()
        );
        let text = format!("{head}{sections}\n{policy}");
        let config_file = dir.path().join("pgveil.toml");
        std::fs::write(&config_file, &text).expect("write config");
        // Loaded from its file, so that a reload reads it again.
        let proxy = start_proxy(Config::load(&config_file).expect("config"));
        Veiled {
            proxy,
            dir,
            path,
            config_file,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    async fn connect(&self, user: &str) -> tokio_postgres::Client {
        connect_to(self.addr(), user, None).await.expect("connect")
    }

    fn audit(&self) -> &pgveil::audit::Audit {
        self.proxy.shared().audit.as_deref().expect("audit on")
    }

    /// Stops accepting, writes the shutdown checkpoint.
    async fn close(&self) {
        self.proxy.shutdown();
        self.audit().close().await;
    }

    /// Every record of the active file.
    fn records(&self) -> Vec<Value> {
        records_of(&self.path)
    }
}

/// Every record of one file as `pgveil audit show` prints it: statements
/// that refer to their query have its fingerprint, tables and columns.
fn records_of(path: &Path) -> Vec<Value> {
    let (lines, unresolved) =
        pgveil::audit::show::expand_file(&std::fs::read(path).unwrap_or_default());
    assert_eq!(
        unresolved,
        0,
        "every query resolves within {}",
        path.display()
    );
    lines
        .iter()
        .map(|l| serde_json::from_slice(l).expect("json line"))
        .collect()
}

/// Every record of one file as written.
fn raw_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn kinds(records: &[Value]) -> Vec<&str> {
    records.iter().filter_map(|r| r["kind"].as_str()).collect()
}

fn statements<'a>(records: &'a [Value], user: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "statement" && r["user"] == user)
        .collect()
}

fn action_of(rec: &Value, column: &str) -> Option<String> {
    rec["columns"]
        .as_array()?
        .iter()
        .find(|c| c["column"] == column)
        .and_then(|c| c["action"].as_str().map(str::to_owned))
}

fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

/// Runs `pgveil audit verify ARGS`; (exit code, stdout + stderr).
fn verify(args: &[&str]) -> (i32, String) {
    let out = pgveil()
        .arg("audit")
        .arg("verify")
        .args(args)
        .output()
        .expect("run pgveil audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn public_key(config: &Path) -> String {
    let out = pgveil()
        .args(["audit", "public-key", "--config"])
        .arg(config)
        .output()
        .expect("run pgveil audit public-key");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn db_err(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().expect("a server-style error");
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Values written and read in the workload: none may reach the trail.
const SECRETS: &[&str] = &[
    "Zhang Wei-Audit",
    "李秀英审计",
    "110105194912310021",
    "13812345678",
    "zhang.audit@example.com",
    "6222021234567890",
    "88 Audit Road, Haidian",
    "1949-12-31",
    "vip-note-secret",
    "Param Person",
    "13700001111",
    "440301199002021234",
    "param@example.net",
    "Copy Guest",
    "13600002222",
    "320102198001011234",
    "copy.guest@example.org",
    "Lookup-Literal-9",
];

#[tokio::test]
async fn every_event_kind_is_recorded_and_no_value_leaks() {
    let v = Veiled::start("");
    let mgr = v.connect("mgr_ben").await;
    // Simple protocol with literals.
    mgr.batch_execute(
        "INSERT INTO guests (id, name, id_number, phone, email, card_number, address, birth_date, note) \
         VALUES (101, 'Zhang Wei-Audit', '110105194912310021', '13812345678', 'zhang.audit@example.com', \
                 '6222021234567890', '88 Audit Road, Haidian', '1949-12-31', 'vip-note-secret'), \
                (102, '李秀英审计', E'440301199002021234', $$13987654321$$, 'li@example.com', NULL, 'x', '1990-01-01', NULL)",
    )
    .await
    .expect("insert literals");
    // Extended protocol with parameters.
    mgr.execute(
        "INSERT INTO guests (id, name, id_number, phone, email) VALUES ($1, $2, $3, $4, $5)",
        &[
            &103i32,
            &"Param Person",
            &"440301199002021234",
            &"13700001111",
            &"param@example.net",
        ],
    )
    .await
    .expect("insert params");
    let rows = mgr
        .query(
            "SELECT name, phone FROM guests WHERE phone = $1",
            &[&"13812345678"],
        )
        .await
        .expect("lookup");
    assert_eq!(rows.len(), 1);
    let rows = mgr
        .simple_query(
            "SELECT id FROM guests WHERE name = 'Lookup-Literal-9' OR phone = '13700001111'",
        )
        .await;
    assert!(rows.is_err(), "equality on a randomized column is refused");

    // COPY through psql.
    let copy = psql(
        v.addr(),
        "mgr_ben",
        None,
        &[
            "-c",
            "\\copy guests (id, name, id_number, phone, email) FROM STDIN",
        ],
        "104\tCopy Guest\t320102198001011234\t13600002222\tcopy.guest@example.org\n\\.\n",
    );
    assert!(copy.status.success(), "{copy:?}");

    // Reads by role: masked, pseudonym, denied; psql too.
    let fd = v.connect("fd_amy").await;
    let got = fd
        .query_one(
            "SELECT phone, birth_date FROM guests WHERE id = $1",
            &[&101i32],
        )
        .await
        .expect("frontdesk read");
    assert_eq!(got.get::<_, String>(0), "138****5678");
    let ana = v.connect("ana_cat").await;
    ana.simple_query("SELECT name FROM guests WHERE id = 101")
        .await
        .expect("analyst read");
    let aud = v.connect("aud_dan").await;
    let err = aud
        .simple_query("SELECT id_number FROM guests WHERE id = 101")
        .await
        .expect_err("auditor denied");
    assert_eq!(db_err(&err).0, "42501");
    let out = psql(
        v.addr(),
        "fd_amy",
        None,
        &[
            "-c",
            "SELECT name, phone FROM guests WHERE id IN (101, 104) ORDER BY id",
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    // Untouched traffic is not a statement record.
    mgr.simple_query("SELECT 42").await.expect("plain");

    // Approvals and reloads come from other parts of pgveil.
    v.audit()
        .approval_issued(pgveil::audit::ApprovalIssued {
            approval: "ap-7".into(),
            requester: "fd_amy".into(),
            approver: "mgr_ben".into(),
            scope: "public.guests".into(),
            max_rows: None,
            single_use: None,
            expires: None,
        })
        .expect("approval issued");
    v.audit()
        .approval_used(pgveil::audit::ApprovalUsed {
            approval: "ap-7".into(),
            user: "fd_amy".into(),
            conn: None,
        })
        .expect("approval used");
    // Reloads through the proxy (what SIGHUP and `POST /reload` call):
    // one applied, one rejected for a broken file.
    let reload = || {
        let shared = v.proxy.shared().clone();
        proxy_runtime().spawn(async move { pgveil::server::reload::reload(&shared).await })
    };
    reload()
        .await
        .expect("reload task")
        .expect("reload applied");
    let good = std::fs::read_to_string(&v.config_file).expect("config");
    std::fs::write(
        &v.config_file,
        "[proxy]\nupstream = \"db:5432?password=hunter2",
    )
    .expect("break config");
    let rejected = reload().await.expect("reload task");
    assert!(rejected.is_err(), "{rejected:?}");
    std::fs::write(&v.config_file, good).expect("restore config");

    // Key rotation and destruction through the keyring CLI, on a copy of
    // the demo keyring, with the same audit path: spooled, then sealed.
    let kr = v.dir.path().join("keyring");
    std::fs::create_dir(&kr).expect("mkdir");
    std::fs::copy(
        demo_keyring_dir().join("keyring.toml"),
        kr.join("keyring.toml"),
    )
    .expect("copy");
    let kcfg = v.dir.path().join("keyring.toml");
    std::fs::write(
        &kcfg,
        format!(
            "[keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n[audit]\npath = \"{}\"\n",
            kr.display(),
            demo_master_key_file().display(),
            v.path.display()
        ),
    )
    .expect("write");
    for args in [
        vec!["keyring", "rotate"],
        vec!["keyring", "destroy", "--version", "1", "--yes"],
    ] {
        let out = pgveil()
            .args(&args)
            .arg("--config")
            .arg(&kcfg)
            .output()
            .expect("keyring cli");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            let k = v.records();
            kinds(&k).contains(&"key_destroyed")
        })
        .await,
        "key events were not taken from the spool"
    );
    drop((mgr, fd, ana, aud));
    assert!(
        eventually(Duration::from_secs(10), || async {
            v.audit().flush().await;
            kinds(&v.records())
                .iter()
                .filter(|k| **k == "connection_closed")
                .count()
                >= 4
        })
        .await
    );
    v.close().await;

    let recs = v.records();
    let ks = kinds(&recs);
    for kind in [
        "start",
        "connection_opened",
        "connection_closed",
        "statement",
        "approval_issued",
        "approval_used",
        "key_rotated",
        "key_destroyed",
        "config_reloaded",
        "checkpoint",
    ] {
        assert!(ks.contains(&kind), "no {kind} record in {ks:?}");
    }
    assert_eq!(
        recs.last().map(|r| r["reason"].clone()),
        Some(Value::from("shutdown"))
    );
    let reloads: Vec<_> = recs
        .iter()
        .filter(|r| r["kind"] == "config_reloaded")
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!(reloads[0]["outcome"], "ok");
    assert_eq!(reloads[0]["path"], v.config_file.display().to_string());
    assert_eq!(reloads[1]["outcome"], "failed");
    // Why, with the line and column, but not the text of the broken line.
    assert!(
        reloads[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("reload rejected") && d.contains("line 2")),
        "{}",
        reloads[1]
    );
    assert!(!std::fs::read_to_string(&v.path)
        .expect("trail")
        .contains("hunter2"));
    let rotated = recs
        .iter()
        .find(|r| r["kind"] == "key_rotated")
        .expect("rotated");
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["previous"], 1);
    let opened = recs
        .iter()
        .find(|r| r["kind"] == "connection_opened" && r["user"] == "fd_amy")
        .expect("opened");
    assert_eq!(opened["role"], "frontdesk");
    assert!(opened["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));

    // Statement records: fingerprints, actions per column, rows, outcomes.
    let mgr_st = statements(&recs, "mgr_ben");
    let insert = mgr_st
        .iter()
        .find(|r| {
            r["fingerprint"].as_str().is_some_and(|f| {
                f.starts_with("INSERT INTO guests (id, name, id_number, phone, email, card_number")
            })
        })
        .expect("literal insert");
    assert!(
        insert["fingerprint"]
            .as_str()
            .is_some_and(|f| f
                .contains("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, NULL, ?, ?, NULL)")),
        "{insert}"
    );
    assert_eq!(
        action_of(insert, "public.guests.phone").as_deref(),
        Some("encrypted")
    );
    assert_eq!(
        action_of(insert, "public.guests.email").as_deref(),
        Some("clear")
    );
    assert_eq!(insert["affected"], 2);
    assert_eq!(insert["outcome"], "ok");
    let lookup = mgr_st
        .iter()
        .find(|r| r["fingerprint"] == "SELECT name, phone FROM guests WHERE phone = ?")
        .expect("lookup");
    assert_eq!(lookup["rows"], 1);
    assert!(lookup["bytes"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(
        action_of(lookup, "public.guests.phone").as_deref(),
        Some("clear")
    );
    assert_eq!(lookup["role"], "manager");
    let refused = mgr_st
        .iter()
        .find(|r| r["outcome"] == "refused")
        .expect("refused statement");
    assert_eq!(refused["sqlstate"], "0A000");
    let copy = mgr_st
        .iter()
        .find(|r| {
            r["fingerprint"]
                .as_str()
                .is_some_and(|f| f.starts_with("COPY guests"))
        })
        .expect("copy");
    assert_eq!(copy["affected"], 1);
    assert_eq!(
        action_of(copy, "public.guests.id_number").as_deref(),
        Some("encrypted")
    );
    let fd_st = statements(&recs, "fd_amy");
    assert!(fd_st.iter().any(
        |r| action_of(r, "public.guests.phone").as_deref() == Some("masked")
            && action_of(r, "public.guests.birth_date").as_deref() == Some("clear")
            && r["rows"] == 1
    ));
    assert!(
        fd_st.iter().any(|r| r["rows"] == 2),
        "psql read of two rows: {fd_st:?}"
    );
    let ana_st = statements(&recs, "ana_cat");
    assert_eq!(
        action_of(ana_st[0], "public.guests.name").as_deref(),
        Some("pseudonym")
    );
    let aud_st = statements(&recs, "aud_dan");
    assert_eq!(
        action_of(aud_st[0], "public.guests.id_number").as_deref(),
        Some("denied")
    );
    assert_eq!(aud_st[0]["outcome"], "refused");
    assert_eq!(aud_st[0]["sqlstate"], "42501");
    assert!(!recs
        .iter()
        .any(|r| r["fingerprint"].as_str().is_some_and(|f| f.contains("42"))));

    // No value and no literal anywhere in the trail.
    let raw = std::fs::read_to_string(&v.path).expect("read trail");
    for secret in SECRETS {
        assert!(!raw.contains(secret), "the audit trail contains {secret:?}");
    }
    // Nor what a role was shown.
    assert!(
        !raw.contains("138****5678"),
        "the audit trail contains a shown value"
    );

    // The sealed trail verifies, with the public key and with the config.
    let key = public_key(&v.config_file);
    let (code, out) = verify(&[v.path.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: "), "{out}");
    let (code, out) = verify(&["--config", v.config_file.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every MAC verified"), "{out}");
}

/// A sealed trail of a small workload, with a checkpoint every 4 records.
async fn sealed_trail() -> (Veiled, Vec<String>, String) {
    let v = Veiled::start("checkpoint_every = 4");
    let c = v.connect("mgr_ben").await;
    for i in 0..6 {
        c.query("SELECT phone FROM guests WHERE id = $1", &[&(200 + i)])
            .await
            .expect("select");
    }
    drop(c);
    v.audit().flush().await;
    v.close().await;
    let lines: Vec<String> = std::fs::read_to_string(&v.path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    let key = public_key(&v.config_file);
    (v, lines, key)
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).expect("json")["seq"]
        .as_u64()
        .expect("seq")
}

/// Writes `lines` to a copy and verifies it with `extra` arguments.
fn verify_copy(dir: &Path, name: &str, lines: &[String], extra: &[&str]) -> (i32, String) {
    let p = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&p, text).expect("write copy");
    let mut args = vec![p.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    verify(&args)
}

#[tokio::test]
async fn tampering_is_detected_and_the_record_named() {
    let (v, lines, key) = sealed_trail().await;
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let pk = ["--public-key", key.as_str()];
    let cfg = v.config_file.to_str().expect("utf8").to_owned();
    let with_master = ["--config", cfg.as_str()];
    let checkpoints: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("\"kind\":\"checkpoint\""))
        .collect();
    assert!(checkpoints.len() >= 3, "{lines:?}");
    let (code, out) = verify_copy(w, "intact", &lines, &pk);
    assert_eq!(code, 0, "{out}");

    // A statement record in the middle, not right before a checkpoint.
    let target = (3..lines.len() - 2)
        .find(|&i| lines[i].contains("\"kind\":\"statement\"") && !checkpoints.contains(&(i + 1)))
        .expect("a statement record");
    let seq = seq_of(&lines[target]);

    // Edit a field.
    let mut edited = lines.clone();
    edited[target] = edited[target].replace("\"outcome\":\"ok\"", "\"outcome\":\"error\"");
    assert_ne!(edited[target], lines[target]);
    let (code, out) = verify_copy(w, "edit", &edited, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record seq {seq} was altered")),
        "{out}"
    );
    let (code, out) = verify_copy(w, "edit-mac", &edited, &with_master);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "record seq {seq} was altered or inserted: its MAC"
        )),
        "{out}"
    );

    // Edit a field and rewrite every hash link after it: the next
    // checkpoint's signature gives it away; the MAC names the record.
    let mut relinked = edited.clone();
    for i in target + 1..relinked.len() {
        let prev = pgveil::audit::chain::hex(
            &pgveil::audit::chain::line_link(relinked[i - 1].as_bytes()).expect("sealed line"),
        );
        let rec: Value = serde_json::from_str(&relinked[i]).expect("json");
        let old = rec["prev"].as_str().expect("prev").to_owned();
        relinked[i] = relinked[i].replace(&old, &prev);
    }
    let next_cp = *checkpoints
        .iter()
        .find(|&&c| c > target)
        .expect("checkpoint after");
    let (code, out) = verify_copy(w, "relinked", &relinked, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "checkpoint seq {} is forged",
            seq_of(&lines[next_cp])
        )),
        "{out}"
    );
    let (code, out) = verify_copy(w, "relinked-mac", &relinked, &with_master);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record seq {seq} was altered")),
        "{out}"
    );

    // Delete a line.
    let mut deleted = lines.clone();
    deleted.remove(target);
    let (code, out) = verify_copy(w, "delete", &deleted, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record seq {seq} was deleted")),
        "{out}"
    );

    // Swap two lines.
    let mut swapped = lines.clone();
    swapped.swap(target, target + 1);
    let (code, out) = verify_copy(w, "swap", &swapped, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("record seq {seq} was reordered")),
        "{out}"
    );

    // Insert a line (a copy of an earlier record).
    let mut inserted = lines.clone();
    inserted.insert(target + 1, lines[2].clone());
    let (code, out) = verify_copy(w, "insert", &inserted, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "repeating record seq {} was inserted",
            seq_of(&lines[2])
        )),
        "{out}"
    );
    assert!(out.contains(&format!("insert:{}", target + 2)), "{out}");

    // Forge a checkpoint: change what it says.
    let mut forged = lines.clone();
    let cp = checkpoints[1];
    forged[cp] = forged[cp].replace("\"reason\":\"count\"", "\"reason\":\"rotate\"");
    assert_ne!(forged[cp], lines[cp]);
    let (code, out) = verify_copy(w, "forge", &forged, &pk);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("checkpoint seq {} is forged", seq_of(&lines[cp]))),
        "{out}"
    );

    // A checkpoint verified with someone else's key is forged too.
    let other = "11".repeat(32);
    let (code, out) = verify_copy(w, "other-key", &lines, &["--public-key", &other]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is forged"), "{out}");

    // Truncate the tail: the end is no longer sealed.
    let cut = &lines[..lines.len() - 3];
    let (code, out) = verify_copy(w, "truncate", cut, &pk);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("UNSEALED"), "{out}");
    assert!(out.contains("truncated"), "{out}");
    // …or cut mid-line.
    let p = w.join("torn");
    let text = lines.join("\n");
    std::fs::write(&p, &text[..text.len() - 20]).expect("write");
    let (code, out) = verify(&[p.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TRUNCATED"), "{out}");
    // Deleting the first record is caught too.
    let (code, out) = verify_copy(w, "head", &lines[1..], &pk);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("records seq 0..0 are missing"), "{out}");
}

#[tokio::test]
async fn rotated_files_verify_as_one_series() {
    let v = Veiled::start("max_file_bytes = 4096\ncheckpoint_every = 1000");
    let c = v.connect("mgr_ben").await;
    // One prepared statement: its query is written in full once per file.
    let select = c
        .prepare("SELECT name FROM guests WHERE id = $1")
        .await
        .expect("prepare");
    for i in 0..30 {
        c.query(&select, &[&(300 + i)]).await.expect("select");
        // A file rotates after the write that fills it, and one group
        // commit can hold many records: write each one on its own so the
        // 30 records are spread over several files.
        assert!(v.audit().flush().await);
    }
    drop(c);
    v.audit().flush().await;
    v.close().await;
    let dir = v.path.parent().expect("dir");
    let rotated = pgveil::audit::files::rotated(&v.path);
    assert!(rotated.len() >= 2, "expected rotation: {rotated:?}");
    // Every rotated file ends with its own seal, and reads on its own:
    // `records_of` finds each query a record refers to in the same file.
    for f in &rotated {
        let recs = records_of(f);
        assert_eq!(
            recs.last().expect("records")["reason"],
            "rotate",
            "{}",
            f.display()
        );
        let reads: Vec<_> = recs
            .iter()
            .filter(|r| r["fingerprint"] == "SELECT name FROM guests WHERE id = ?")
            .collect();
        assert!(
            reads
                .iter()
                .all(|r| action_of(r, "public.guests.name").is_some()),
            "{reads:?}"
        );
        let raw = raw_records(f);
        let full = raw.iter().filter(|r| r["fingerprint"].is_string()).count();
        let referring = raw
            .iter()
            .filter(|r| r["kind"] == "statement" && r.get("fingerprint").is_none())
            .count();
        if !reads.is_empty() {
            assert_eq!(full, 1, "{}: the query once in full", f.display());
            assert_eq!(full + referring, reads.len(), "{}", f.display());
        }
    }
    let key = public_key(&v.config_file);
    let (code, out) = verify(&[dir.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("in {} file(s)", rotated.len() + 1)),
        "{out}"
    );

    // A missing middle file is a gap.
    let gone = &rotated[1];
    let first_gone = records_of(gone)[0]["seq"].as_u64().expect("seq");
    let mut files: Vec<String> = rotated
        .iter()
        .chain(std::iter::once(&v.path))
        .filter(|f| *f != gone)
        .map(|f| f.display().to_string())
        .collect();
    files.push("--public-key".into());
    files.push(key.clone());
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let (code, out) = verify(&args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("records seq {first_gone}..")),
        "{out}"
    );
    assert!(out.contains("deleted"), "{out}");
    // Archived oldest files: verifiable with --partial.
    let rest: Vec<String> = rotated[1..]
        .iter()
        .chain(std::iter::once(&v.path))
        .map(|f| f.display().to_string())
        .collect();
    let mut args: Vec<&str> = rest.iter().map(String::as_str).collect();
    args.extend(["--public-key", &key, "--partial"]);
    let (code, out) = verify(&args);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn statements_on_protected_columns_are_refused_while_the_audit_cannot_be_written() {
    let v = Veiled::start("");
    let c = v.connect("mgr_ben").await;
    let protected = "SELECT phone FROM guests WHERE id = $1";
    c.query(protected, &[&401i32])
        .await
        .expect("works at first");
    v.audit().flush().await;

    // Replace the audit directory by a regular file: nobody, root
    // included, can create or reach a file under it.
    let dir = v.path.parent().expect("dir").to_path_buf();
    let moved = v.dir.path().join("audit.moved");
    std::fs::rename(&dir, &moved).expect("move the audit directory away");
    std::fs::write(&dir, "not a directory").expect("block the path");

    assert!(
        eventually(Duration::from_secs(10), || async {
            match c.query(protected, &[&401i32]).await {
                Err(e) => {
                    let (code, msg) = db_err(&e);
                    assert_eq!(code, "58030", "{msg}");
                    assert!(
                        msg.starts_with("pgveil: the audit trail cannot be written"),
                        "{msg}"
                    );
                    true
                }
                Ok(_) => false,
            }
        })
        .await,
        "protected statements were not refused"
    );
    // The simple protocol is refused too, and other traffic goes on.
    let err = c
        .simple_query("SELECT name FROM guests WHERE id = 401")
        .await
        .expect_err("refused");
    assert_eq!(db_err(&err).0, "58030");
    let row = c
        .query_one("SELECT 1 + 1", &[])
        .await
        .expect("untouched works");
    assert_eq!(row.get::<_, i32>(0), 2);
    let fresh = v.connect("fd_amy").await;
    fresh
        .simple_query("SELECT now()")
        .await
        .expect("new connections work");

    // Writable again: accepted again, and nothing was lost.
    std::fs::remove_file(&dir).expect("unblock");
    std::fs::rename(&moved, &dir).expect("restore the directory");
    assert!(
        eventually(Duration::from_secs(10), || async {
            c.query(protected, &[&401i32]).await.is_ok()
        })
        .await,
        "protected statements stayed refused after recovery"
    );
    drop((c, fresh));
    v.audit().flush().await;
    v.close().await;
    let recs = v.records();
    assert!(
        recs.iter()
            .any(|r| r["outcome"] == "refused" && r["sqlstate"] == "58030"),
        "refusals are recorded once the trail is writable"
    );
    let key = public_key(&v.config_file);
    let (code, out) = verify(&[v.path.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn start_refuses_an_unusable_audit_path() {
    schema();
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").expect("write");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\
         [keyring]\ndir = \"{}\"\nmaster_key_file = \"{}\"\n\
         [audit]\npath = \"{}\"\n",
        db().addr(),
        demo_keyring_dir().display(),
        demo_master_key_file().display(),
        blocker.join("audit.jsonl").display()
    );
    let cfg = Config::parse(&text).expect("config");
    let err = std::thread::spawn(move || proxy_runtime().block_on(Proxy::bind(cfg)))
        .join()
        .expect("thread")
        .expect_err("must not start");
    assert!(err.to_string().contains("audit"), "{err}");
}

#[tokio::test]
async fn quiet_trails_are_sealed_by_the_interval_and_live_trails_verify_as_unsealed() {
    let v = Veiled::start("checkpoint_interval = \"100ms\"");
    let c = v.connect("mgr_ben").await;
    c.query("SELECT phone FROM guests WHERE id = $1", &[&501i32])
        .await
        .expect("select");
    assert!(
        eventually(Duration::from_secs(10), || async {
            v.records()
                .iter()
                .any(|r| r["kind"] == "checkpoint" && r["reason"] == "interval")
        })
        .await,
        "no interval checkpoint"
    );
    // While pgveil runs, the end of the trail is not a shutdown seal.
    let key = public_key(&v.config_file);
    let (code, out) = verify(&[v.path.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("UNSEALED"), "{out}");
    drop(c);
    v.close().await;
    let (code, out) = verify(&[v.path.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_restart_continues_the_chain_after_a_crash() {
    let first = Veiled::start("");
    let c = first.connect("mgr_ben").await;
    c.query("SELECT phone FROM guests WHERE id = $1", &[&601i32])
        .await
        .expect("select");
    drop(c);
    first.close().await;
    // Make it look like a crash: no shutdown seal, and half a line.
    let text = std::fs::read_to_string(&first.path).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let mut crashed = lines.join("\n");
    crashed.push_str("\n{\"seq\":99,\"ts\":\"2026");
    std::fs::write(&first.path, crashed).expect("write");

    // A second pgveil on the same trail.
    let cfg = Config::load(&first.config_file).expect("config");
    let second = start_proxy(cfg);
    let audit = second.shared().audit.clone().expect("audit");
    let c = connect_to(second.local_addr(), "mgr_ben", None)
        .await
        .expect("connect");
    c.query("SELECT phone FROM guests WHERE id = $1", &[&602i32])
        .await
        .expect("select");
    drop(c);
    audit.flush().await;
    second.shutdown();
    audit.close().await;

    let recs = first.records();
    let starts: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "start").collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["torn_bytes"], 20);
    let (code, out) = verify(&["--config", first.config_file.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ended without a shutdown checkpoint"), "{out}");
    assert!(out.contains("every MAC verified"), "{out}");
}

#[test]
fn a_second_writer_on_the_same_trail_is_refused() {
    let v = Veiled::start("");
    let cfg = Config::load(&v.config_file).expect("config");
    let err = pgveil::audit::Audit::start(&cfg).expect_err("locked");
    assert!(
        err.to_string().contains("in use by another pgveil"),
        "{err}"
    );
}

#[tokio::test]
async fn blocked_bulk_reads_and_approvals_are_recorded() {
    let policy = POLICY.replace(
        "members = [\"frontdesk\"]\nclearance = 2\n",
        "members = [\"frontdesk\"]\nclearance = 2\nmax_rows = 2\n",
    );
    assert!(policy.contains("max_rows = 2"));
    let v = Veiled::start_with("", "[approvals]\napprovers = [\"mgr_ben\"]\n", &policy);
    let mgr = v.connect("mgr_ben").await;
    mgr.batch_execute(
        "INSERT INTO guests (id, name, phone) VALUES (801, 'Bulk One', '13500000801'), \
         (802, 'Bulk Two', '13500000802'), (803, 'Bulk Three', '13500000803')",
    )
    .await
    .expect("insert");
    let fd = v.connect("fd_amy").await;
    let bulk = "SELECT name FROM guests WHERE id BETWEEN 801 AND 803";
    let err = fd.simple_query(bulk).await.expect_err("over the cap");
    assert_eq!(db_err(&err).0, "42501");

    let out = pgveil()
        .args([
            "approve",
            "--requester",
            "fd_amy",
            "--approver",
            "mgr_ben",
            "--tables",
            "guests",
            "--max-rows",
            "10",
            "--ttl",
            "1h",
            "--reason",
            "export",
            "--config",
        ])
        .arg(&v.config_file)
        .output()
        .expect("pgveil approve");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout.lines().last().expect("token").to_owned();
    fd.batch_execute(&format!("SET pgveil.approval = '{token}'"))
        .await
        .expect("set approval");
    let rows = fd.simple_query(bulk).await.expect("approved read");
    assert_eq!(
        rows.iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count(),
        3
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            kinds(&v.records()).contains(&"approval_issued")
        })
        .await,
        "the approval was not taken from the spool"
    );
    drop((mgr, fd));
    v.audit().flush().await;
    v.close().await;

    let recs = v.records();
    let issued = recs
        .iter()
        .find(|r| r["kind"] == "approval_issued")
        .expect("issued");
    let id = issued["approval"].as_str().expect("id").to_owned();
    assert_eq!(issued["requester"], "fd_amy");
    assert_eq!(issued["approver"], "mgr_ben");
    assert_eq!(issued["max_rows"], 10);
    assert!(issued.get("reason").is_none());
    let fd_st = statements(&recs, "fd_amy");
    let blocked = fd_st
        .iter()
        .find(|r| r["outcome"] == "blocked")
        .expect("blocked statement");
    assert_eq!(blocked["sqlstate"], "42501");
    assert_eq!(blocked["rows"], 0);
    let approved = fd_st
        .iter()
        .find(|r| r["approval"] == id.as_str())
        .expect("statement under the approval");
    assert_eq!(approved["outcome"], "ok");
    assert_eq!(approved["rows"], 3);
    assert!(recs
        .iter()
        .any(|r| r["kind"] == "approval_used" && r["approval"] == id.as_str()));
    assert!(!std::fs::read_to_string(&v.path)
        .expect("read")
        .contains(&token));
    let key = public_key(&v.config_file);
    let (code, out) = verify(&[v.path.to_str().expect("utf8"), "--public-key", &key]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn set_role_and_copy_to_are_recorded() {
    let v = Veiled::start("");
    let su = v.connect("postgres").await;
    su.batch_execute(
        "INSERT INTO guests (id, name, phone) VALUES (901, 'Role Test', '13400000901'), \
         (902, 'Role Test2', '13400000902')",
    )
    .await
    .expect("insert");
    su.batch_execute("SET ROLE fd_amy").await.expect("set role");
    let rows = su
        .simple_query("SELECT phone FROM guests WHERE id = 901")
        .await
        .expect("read as frontdesk");
    assert!(rows.iter().any(|m| matches!(m,
        tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("134****0901"))));
    su.batch_execute("RESET ROLE").await.expect("reset role");
    let out = psql(
        v.addr(),
        "fd_amy",
        None,
        &["-c", "COPY guests (name, phone) TO STDOUT"],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let copied = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(copied >= 2);
    drop(su);
    v.audit().flush().await;
    v.close().await;
    let recs = v.records();
    let as_fd = statements(&recs, "postgres")
        .into_iter()
        .find(|r| r["fingerprint"] == "SELECT phone FROM guests WHERE id = ?")
        .expect("the read after SET ROLE");
    assert_eq!(as_fd["role"], "frontdesk", "{as_fd}");
    assert_eq!(
        action_of(as_fd, "public.guests.phone").as_deref(),
        Some("masked")
    );
    let copy = statements(&recs, "fd_amy")
        .into_iter()
        .find(|r| r["fingerprint"] == "COPY guests (name, phone) TO STDOUT")
        .expect("COPY TO record");
    assert_eq!(copy["rows"], copied as u64, "{copy}");
    assert_eq!(copy["affected"], copied as u64, "{copy}");
    assert_eq!(
        action_of(copy, "public.guests.phone").as_deref(),
        Some("masked")
    );
    let raw = std::fs::read_to_string(&v.path).expect("read");
    assert!(!raw.contains("13400000901") && !raw.contains("Role Test"));
}

/// A fresh audited proxy, and a superuser connection through it that has
/// inserted guest `id` (phone 13400000`id`).
async fn with_guest(id: i32, name: &str) -> (Veiled, tokio_postgres::Client) {
    let v = Veiled::start("");
    let su = v.connect("postgres").await;
    su.execute(
        "INSERT INTO guests (id, name, phone) VALUES ($1, $2, $3)",
        &[&id, &name, &format!("13400000{id}")],
    )
    .await
    .expect("insert");
    (v, su)
}

/// Five prepared reads of guest `id` by `fd_amy`, then five by `mgr_ben`,
/// each through pgbench (`-M prepared`: Parse once, then Bind/Execute
/// pipelined to Sync); the trail closed.
async fn prepared_reads_by_two_roles(id: i32) -> Veiled {
    let (v, _su) = with_guest(id, "Bench Read").await;
    let script = v.dir.path().join("read.sql");
    std::fs::write(
        &script,
        format!("SELECT name, phone FROM guests WHERE id = {id};\n"),
    )
    .expect("script");
    let script = script.to_str().expect("utf8");
    for user in ["fd_amy", "mgr_ben"] {
        let out = run_tool(
            "pgbench",
            v.addr(),
            user,
            None,
            &[
                "-n", "-c", "1", "-t", "5", "-M", "prepared", "-f", script, "postgres",
            ],
            "",
        );
        assert!(out.status.success(), "{user}: {out:?}");
    }
    v.audit().flush().await;
    v.close().await;
    v
}

/// pgbench's prepared mode pipelines Bind, Describe (portal), Execute and
/// Sync, so the result's plan is only settled when the rows arrive: every
/// execution's record must still say what the role was shown.
#[tokio::test]
async fn pipelined_prepared_executions_record_what_each_role_was_shown() {
    let v = prepared_reads_by_two_roles(911).await;
    let recs = v.records();
    for (user, name, phone) in [
        ("fd_amy", "masked", "masked"),
        ("mgr_ben", "clear", "clear"),
    ] {
        let reads: Vec<_> = statements(&recs, user)
            .into_iter()
            .filter(|r| r["fingerprint"] == "SELECT name, phone FROM guests WHERE id = ?;")
            .collect();
        assert_eq!(reads.len(), 5, "{user}: {reads:?}");
        for r in reads {
            assert_eq!(r["rows"], 1, "{r}");
            assert_eq!(
                action_of(r, "public.guests.name").as_deref(),
                Some(name),
                "{r}"
            );
            assert_eq!(
                action_of(r, "public.guests.phone").as_deref(),
                Some(phone),
                "{r}"
            );
        }
    }
}

/// A prepared statement's later records name its query instead of
/// repeating it; `pgveil audit show` fills it back in, and a file that
/// lacks the query is noticed by `verify` and `show`.
#[tokio::test]
async fn later_records_name_their_query_and_show_fills_it_in() {
    let v = prepared_reads_by_two_roles(912).await;
    let recs = v.records();
    // As written, each connection's first execution carries the query in
    // full and the other four refer to it: no fingerprint, no columns.
    let raw = raw_records(&v.path);
    for user in ["fd_amy", "mgr_ben"] {
        let mine = statements(&raw, user);
        let full: Vec<_> = mine
            .iter()
            .filter(|r| r["fingerprint"].is_string())
            .collect();
        assert_eq!(full.len(), 1, "{user}: {mine:?}");
        let query = &full[0]["query"];
        assert!(query.is_u64(), "{user}: {mine:?}");
        let referring: Vec<_> = mine.iter().filter(|r| r["query"] == *query).collect();
        assert_eq!(referring.len(), 5, "{user}: {mine:?}");
        assert!(referring[1..]
            .iter()
            .all(|r| r.get("fingerprint").is_none() && r.get("columns").is_none()));
    }
    // `pgveil audit show` prints every record whole, as `records_of` reads it.
    let out = pgveil()
        .args(["audit", "show"])
        .arg(&v.path)
        .output()
        .expect("run pgveil audit show");
    assert!(out.status.success(), "{out:?}");
    let shown: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(shown, recs);
    // Split after amy's first read, the records that refer to it are in
    // a file without their query: the series still verifies (a note names
    // them), and `show` of that file alone says it cannot fill them in.
    let text = std::fs::read_to_string(&v.path).expect("trail");
    let lines: Vec<&str> = text.lines().collect();
    let cut = 1 + lines
        .iter()
        .position(|l| l.contains("\"user\":\"fd_amy\"") && l.contains("\"fingerprint\""))
        .expect("amy's first read");
    let (a, b) = (v.dir.path().join("a.jsonl"), v.dir.path().join("b.jsonl"));
    std::fs::write(&a, lines[..cut].join("\n") + "\n").expect("write a");
    std::fs::write(&b, lines[cut..].join("\n") + "\n").expect("write b");
    let key = public_key(&v.config_file);
    let (code, report) = verify(&[
        a.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
        "--public-key",
        &key,
    ]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("note: 4 statement record(s)") && report.contains("name a query"),
        "{report}"
    );
    let out = pgveil()
        .args(["audit", "show"])
        .arg(&b)
        .output()
        .expect("run pgveil audit show");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("4 record(s) name a query"),
        "{out:?}"
    );
}

/// A prepared statement's record parts are reused only for the same
/// result: executed again after `SET ROLE`, its record says what the new
/// role was shown.
#[tokio::test]
async fn a_prepared_statement_reused_after_set_role_records_the_new_roles_view() {
    let (v, su) = with_guest(921, "Role Reuse").await;
    su.batch_execute("SET ROLE mgr_ben")
        .await
        .expect("set role");
    let stmt = su
        .prepare("SELECT phone FROM guests WHERE id = $1")
        .await
        .expect("prepare");
    for _ in 0..2 {
        let row = su.query_one(&stmt, &[&921i32]).await.expect("as manager");
        assert_eq!(row.get::<_, String>(0), "13400000921");
    }
    su.batch_execute("SET ROLE fd_amy").await.expect("set role");
    let row = su
        .query_one(&stmt, &[&921i32])
        .await
        .expect("as front desk");
    assert_eq!(row.get::<_, String>(0), "134****0921");
    v.audit().flush().await;
    v.close().await;
    let recs = v.records();
    let reads: Vec<_> = statements(&recs, "postgres")
        .into_iter()
        .filter(|r| r["fingerprint"] == "SELECT phone FROM guests WHERE id = ?")
        .collect();
    let seen: Vec<_> = reads
        .iter()
        .map(|r| (r["role"].as_str(), action_of(r, "public.guests.phone")))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("manager"), Some("clear".to_owned())),
            (Some("manager"), Some("clear".to_owned())),
            (Some("frontdesk"), Some("masked".to_owned())),
        ],
        "{reads:?}"
    );
}

/// Every read path leaves a record saying what the role was shown: a
/// portal read a few rows per Execute, and a cursor fetched through the
/// extended protocol.
#[tokio::test]
async fn portal_and_cursor_reads_record_what_the_role_was_shown() {
    let (v, su) = with_guest(931, "Portal Read").await;
    su.execute(
        "INSERT INTO guests (id, name, phone) VALUES ($1, $2, $3)",
        &[&932i32, &"Portal Read2", &"13400000932"],
    )
    .await
    .expect("insert");
    drop(su);
    let mut fd = v.connect("fd_amy").await;
    let tx = fd.transaction().await.expect("begin");
    let stmt = tx
        .prepare("SELECT phone FROM guests WHERE id IN (931, 932) ORDER BY id")
        .await
        .expect("prepare");
    let portal = tx.bind(&stmt, &[]).await.expect("bind");
    let mut phones = Vec::new();
    for _ in 0..2 {
        for row in tx.query_portal(&portal, 1).await.expect("execute 1 row") {
            phones.push(row.get::<_, String>(0));
        }
    }
    tx.batch_execute(
        "DECLARE c CURSOR FOR SELECT phone FROM guests WHERE id IN (931, 932) ORDER BY id",
    )
    .await
    .expect("declare");
    for row in tx.query("FETCH 2 FROM c", &[]).await.expect("fetch") {
        phones.push(row.get::<_, String>(0));
    }
    tx.batch_execute("PREPARE p AS SELECT phone FROM guests WHERE id = 931")
        .await
        .expect("PREPARE");
    for row in tx.query("EXECUTE p", &[]).await.expect("EXECUTE") {
        phones.push(row.get::<_, String>(0));
    }
    tx.commit().await.expect("commit");
    assert_eq!(
        phones,
        [
            "134****0931",
            "134****0932",
            "134****0931",
            "134****0932",
            "134****0931"
        ]
    );
    v.audit().flush().await;
    v.close().await;
    let recs = v.records();
    let fd_st = statements(&recs, "fd_amy");
    let portal_reads: Vec<_> = fd_st
        .iter()
        .filter(|r| r["fingerprint"] == "SELECT phone FROM guests WHERE id IN (?, ?) ORDER BY id")
        .collect();
    assert_eq!(portal_reads.len(), 2, "one record per Execute: {fd_st:?}");
    let fetch = fd_st
        .iter()
        .find(|r| r["fingerprint"] == "FETCH ? FROM c")
        .unwrap_or_else(|| panic!("FETCH record: {fd_st:?}"));
    let execute = fd_st
        .iter()
        .find(|r| r["fingerprint"] == "EXECUTE p")
        .unwrap_or_else(|| panic!("EXECUTE record: {fd_st:?}"));
    assert_eq!(execute["rows"], 1, "{execute}");
    for r in portal_reads.into_iter().chain([fetch, execute]) {
        assert_eq!(
            action_of(r, "public.guests.phone").as_deref(),
            Some("masked"),
            "{r}"
        );
    }
    assert_eq!(fetch["rows"], 2, "{fetch}");
}

/// Sessions on both workers seal concurrently: each record is stamped under
/// the lock that gives it its `seq`, so time never runs backwards along the
/// trail (an investigator reads `ts` in `seq` order).
#[tokio::test]
async fn timestamps_follow_the_sequence_under_concurrent_sessions() {
    let v = Veiled::start("checkpoint_every = 100000");
    let mut tasks = Vec::new();
    for n in 0..4 {
        let c = v.connect("mgr_ben").await;
        tasks.push(tokio::spawn(async move {
            let select = c
                .prepare("SELECT name FROM guests WHERE id = $1")
                .await
                .expect("prepare");
            for i in 0..600 {
                c.query(&select, &[&(n * 1000 + i)]).await.expect("select");
            }
        }));
    }
    for t in tasks {
        t.await.expect("session task");
    }
    v.audit().flush().await;
    v.close().await;
    let recs = v.records();
    let stamps: Vec<(u64, &str)> = recs
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["ts"].as_str().expect("ts"),
            )
        })
        .collect();
    assert!(stamps.len() > 2400, "{} records", stamps.len());
    // Fixed-width RFC 3339 in UTC: string order is time order.
    for pair in stamps.windows(2) {
        assert!(pair[0].0 < pair[1].0, "seq order: {pair:?}");
        assert!(pair[0].1 <= pair[1].1, "ts ran backwards: {pair:?}");
    }
}
