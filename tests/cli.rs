//! The `pgveil` binary as a user runs it: config errors, `serve`, `demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pgveil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgveil"))
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn broken_config_files_name_the_key_and_line() {
    for (text, expect) in [
        (
            "[proxy]\nlisten = \"127.0.0.1:7000\"\nupstraem = \"x:1\"\n",
            vec!["line 3", "upstraem"],
        ),
        (
            "[proxy]\nmax_message_bytes = \"big\"\n",
            vec!["line 2", "max_message_bytes"],
        ),
        (
            "[proxy]\nupstream = \"db\"\n",
            vec!["line 2", "expected host:port"],
        ),
        ("[proxxy]\n", vec!["line 1", "proxxy"]),
        ("this is not toml", vec!["line 1"]),
    ] {
        let f = write_config(text);
        let out = pgveil()
            .args(["serve", "--config"])
            .arg(f.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("pgveil: config file"), "{text}: {err}");
        for e in expect {
            assert!(err.contains(e), "{text}: missing {e:?} in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn missing_config_file_and_bad_flags_are_clear_errors() {
    let out = pgveil()
        .args(["serve", "--config", "/nonexistent/pgveil.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/pgveil.toml"),
        "{err}"
    );

    let out = pgveil()
        .args(["serve", "--upstream", "no-port-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upstream: expected host:port"), "{err}");
}

#[test]
fn serve_listens_and_stops_on_sigterm() {
    let port = pgveil::tempdb::free_port().unwrap();
    let f = write_config(&format!(
        "[proxy]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let mut child = pgveil()
        .args(["serve", "--config"])
        .arg(f.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pgveil serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn demo_serves_the_hotel_fixtures_and_cleans_up() {
    let port = pgveil::tempdb::free_port().unwrap();
    let mut child = pgveil()
        .args(["demo", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    assert!(text.contains(&format!("port={port}")), "{text}");
    let bindir = pgveil::tempdb::find_bindir().unwrap();
    let query = |user: &str, port: u16, sql: &str| {
        let out = Command::new(bindir.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                user,
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = query("postgres", port, "select count(*) from guests");
    assert!(ok && text == "3000\n", "{text}");
    // Guest 1's phone is 13000007919 (fixtures/hotel.sql).
    let sql = "select phone, birth_date from guests where id = 1";
    assert_eq!(
        query("bob", port, sql),
        (true, "13000007919|1950-02-07\n".into())
    );
    assert_eq!(
        query("alice", port, sql),
        (true, "130****7919|1950-02-07\n".into())
    );
    let (ok, text) = query("dave", port, "select id_number from guests where id = 1");
    assert!(
        !ok && text.contains("permission denied for column public.guests.id_number"),
        "{text}"
    );
    // Searchable lookup through pgveil.
    assert_eq!(
        query(
            "bob",
            port,
            "select id from guests where phone = '13000007919'"
        ),
        (true, "1\n".into())
    );
    // Directly on the server: only ciphertext.
    let pg_port: u16 = printed
        .iter()
        .filter_map(|l| l.split("port=").nth(1))
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .find(|p| *p != port)
        .expect("direct port printed");
    let (ok, raw) = query("postgres", pg_port, "copy guests to stdout");
    assert!(ok, "{raw}");
    assert!(
        !raw.contains("13000007919") && !raw.contains("3133303030303037393139"),
        "plaintext at rest"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "demo proxy still listening"
    );
}

#[test]
fn keyring_commands_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let cfg = write_config(&format!("[keyring]\ndir = \"{}\"\n", keys.display()));
    // 32 bytes of 0x07, base64: a test key, never a real one.
    let master = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let run = |args: &[&str], key: Option<&str>| {
        let mut cmd = pgveil();
        cmd.arg("keyring")
            .args(args)
            .arg("--config")
            .arg(cfg.path());
        cmd.env_remove("PGVEIL_MASTER_KEY");
        if let Some(k) = key {
            cmd.env("PGVEIL_MASTER_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&["init"], None);
    assert!(!ok && text.contains("PGVEIL_MASTER_KEY"), "{text}");
    let (ok, text) = run(&["init"], Some(master));
    assert!(ok, "{text}");
    let (ok, text) = run(&["init"], Some(master));
    assert!(!ok, "init must refuse to overwrite: {text}");
    let (ok, text) = run(&["rotate"], Some(master));
    assert!(ok, "{text}");
    let (ok, text) = run(&["list"], Some(master));
    assert!(
        ok && text.contains("decrypt-only") && text.contains("active"),
        "{text}"
    );
    let (ok, text) = run(&["destroy", "--version", "1"], Some(master));
    assert!(!ok && text.contains("--yes"), "{text}");
    let (ok, text) = run(&["destroy", "--version", "1", "--yes"], Some(master));
    assert!(ok, "{text}");
    let (ok, text) = run(&["list"], Some(master));
    assert!(ok && text.contains("destroyed"), "{text}");
    // A wrong master key cannot open the keyring.
    let (ok, text) = run(
        &["list"],
        Some("CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg="),
    );
    assert!(!ok && text.contains("pgveil:"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn check_reports_every_policy_problem_against_the_live_schema() {
    let db = common::db();
    db.psql(
        "DROP TABLE IF EXISTS check_guests; \
         CREATE TABLE check_guests (id int, phone text, id_number bytea, \"Email\" bytea);",
    )
    .unwrap();
    let header = format!("[proxy]\nupstream = \"{}\"\n", db.addr());
    let good = write_config(&format!(
        "{header}
[[columns]]
table = \"public.check_guests\"
column = \"id_number\"
type = \"text\"
encrypt = \"searchable\"
level = 4
mask = \"cn_id\"

[[columns]]
table = \"check_guests\"
column = \"\\\"Email\\\"\"
type = \"text\"
level = 3
mask = \"email\"

[[columns]]
table = \"check_guests\"
column = \"phone\"
type = \"text\"
encrypt = \"none\"
level = 3
mask = \"phone\"
"
    ));
    let out = pgveil()
        .arg("check")
        .arg("--config")
        .arg(good.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK (3 protected column(s)"), "{text}");

    let bad = write_config(&format!(
        "{header}
[[columns]]
table = \"check_guests\"
column = \"phone\"
type = \"text\"
encrypt = \"searchable\"
level = 3

[[columns]]
table = \"check_guests\"
column = \"nope\"
type = \"text\"
level = 3

[[columns]]
table = \"no_such_table\"
column = \"x\"
type = \"int4\"
level = 2
mask = \"phone\"

[[columns]]
table = \"check_guests\"
column = \"PHONE\"
type = \"text\"
level = 7
"
    ));
    let out = pgveil()
        .arg("check")
        .arg("--config")
        .arg(bad.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    for needle in [
        "line 5: [[columns]] check_guests.phone: column public.check_guests.phone is text in the database but encrypted columns must be bytea",
        "line 12: [[columns]] check_guests.nope: column public.check_guests.nope does not exist",
        "line 18: [[columns]] no_such_table.x: table public.no_such_table does not exist",
        "line 18: [[columns]] no_such_table.x: mask \"phone\" does not produce a valid int4 value",
        "line 25: [[columns]] check_guests.PHONE: public.check_guests.phone is listed twice (first at line 5)",
        "line 25: [[columns]] check_guests.PHONE: level must be 1 (low) to 4",
        "pgveil: 7 problem(s)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // serve refuses a config with policy problems, listing them.
    let out = pgveil()
        .arg("serve")
        .arg("--config")
        .arg(bad.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("policy problems") && text.contains("level must be 1"),
        "{text}"
    );
}
