//! End-to-end protocol coverage: real PostgreSQL, real clients
//! (tokio-postgres, psql, pgbench), pgveil in between.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::AsyncMessage;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn ssl_and_gssenc_requests_are_declined_then_startup_proceeds() {
    let addr = proxy_addr();
    for code in [80_877_103u32, 80_877_104] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = 8u32.to_be_bytes().to_vec();
        req.extend(code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut answer = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut answer)
            .await
            .unwrap();
        assert_eq!(&answer, b"N", "code {code}");
        // The same connection then carries a normal startup.
        s.write_all(&raw::startup(&[("user", "postgres")]))
            .await
            .unwrap();
        let msgs = raw::read_until_ready(&mut s).await;
        assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'));
    }
    // psql with sslmode=prefer falls back to plaintext; require is refused
    // the way PostgreSQL without TLS refuses it.
    let ok = psql(addr, "postgres", None, &["-c", "select 'plain'"], "");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(stdout(&ok).trim(), "plain");
    let conn = format!(
        "host={} port={} user=postgres dbname=postgres sslmode=require",
        addr.ip(),
        addr.port()
    );
    let out = std::process::Command::new(db().bindir().join("psql"))
        .args([&conn, "-c", "select 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server does not support SSL"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn startup_parameters_reach_the_server() {
    let addr = proxy_addr();
    let conn_str = format!(
        "{} application_name=pgveil-test options='-c search_path=pg_catalog,public -c work_mem=8MB'",
        conn_str(addr, "postgres", None)
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select current_setting('application_name'), current_setting('search_path'), current_setting('work_mem')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pgveil-test");
    assert_eq!(row.get::<_, String>(1), "pg_catalog,public");
    assert_eq!(row.get::<_, String>(2), "8MB");
}

#[tokio::test]
async fn authentication_methods_are_relayed_end_to_end() {
    let addr = proxy_addr();
    for (user, password) in [
        ("postgres", None),
        ("scram_user", Some("scram_pass")),
        ("md5_user", Some("md5_pass")),
    ] {
        let client = connect_to(addr, user, password)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    // The server's own error for a wrong password reaches the client.
    for user in ["scram_user", "md5_user"] {
        let err = connect_to(addr, user, Some("wrong")).await.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code(), &SqlState::INVALID_PASSWORD, "{user}");
        assert!(
            db.message().contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{}",
            db.message()
        );
    }
    // psql with a password over SCRAM and md5.
    for (user, pw) in [("scram_user", "scram_pass"), ("md5_user", "md5_pass")] {
        let out = psql(addr, user, Some(pw), &["-c", "select current_user"], "");
        assert!(out.status.success(), "{user}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), user);
    }
}

#[tokio::test]
async fn pgveil_records_the_authenticated_user() {
    let client = connect_to(proxy_addr(), "scram_user", Some("scram_pass"))
        .await
        .unwrap();
    client.simple_query("select 1").await.unwrap();
    let users = proxy().shared().cancels.users();
    assert!(users.iter().any(|u| u == "scram_user"), "{users:?}");
}

#[tokio::test]
async fn cancel_reaches_the_right_backend() {
    let client = connect().await;
    let bystander = connect().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send cancel through pgveil");
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The other session was not cancelled and still works.
    let row = bystander.query_one("select 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test]
async fn clients_never_see_the_server_pid_in_their_cancel_key() {
    let (_s, msgs) = raw::login(proxy_addr()).await;
    let key = msgs.iter().find(|m| m.0 == b'K').expect("BackendKeyData");
    let shown_pid = i32::from_be_bytes(key.1[..4].try_into().unwrap());
    let direct = connect_direct().await;
    let pids: Vec<i32> = direct
        .query("select pid from pg_stat_activity", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!pids.contains(&shown_pid), "{shown_pid} in {pids:?}");
}

#[tokio::test]
async fn simple_query_multi_statement_with_error_in_the_middle() {
    let client = connect().await;
    let err = client
        .simple_query("select 1; select 1/0; select 3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let msgs = client
        .simple_query("select 'a' as x; select 'b'")
        .await
        .unwrap();
    let values: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["a", "b"]);
    // psql: the statements before the error ran, the ones after did not.
    let out = psql(
        proxy_addr(),
        "postgres",
        None,
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "select 'first'; select 1/0; select 'never'",
        ],
        "",
    );
    assert!(
        stderr(&out).contains("division by zero"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn extended_protocol_pipelined_named_and_unnamed() {
    let client = connect().await;
    client
        .batch_execute("create table if not exists ext_t (id int primary key, v text, b bytea)")
        .await
        .unwrap();
    // A named prepared statement executed many times, pipelined.
    let insert = client
        .prepare(
            "insert into ext_t values ($1, $2, $3) on conflict (id) do update set v = excluded.v",
        )
        .await
        .unwrap();
    let futs: Vec<_> = (0..50)
        .map(|i| {
            let v = format!("v{i}");
            let b = vec![i as u8; 3];
            let client = &client;
            let insert = &insert;
            async move { client.execute(insert, &[&i, &v, &b]).await }
        })
        .collect();
    for r in futures_util::future::join_all(futs).await {
        assert_eq!(r.unwrap(), 1);
    }
    // Unnamed statements with binary parameters and results.
    let row = client
        .query_one(
            "select v, b, $1::int8 * 2 from ext_t where id = $2",
            &[&21i64, &7i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "v7");
    assert_eq!(row.get::<_, Vec<u8>>(1), vec![7u8; 3]);
    assert_eq!(row.get::<_, i64>(2), 42);
    // An error in a pipeline does not disturb the statements around it.
    let (a, b, c) = tokio::join!(
        client.query_one("select 1::int4", &[]),
        client.query_one("select 1/0", &[]),
        client.query_one("select 3::int4", &[]),
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap_err().code(), Some(&SqlState::DIVISION_BY_ZERO));
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    // Dropping a statement sends Close; preparing again works.
    drop(insert);
    let stmt = client.prepare("select count(*) from ext_t").await.unwrap();
    let n: i64 = client.query_one(&stmt, &[]).await.unwrap().get(0);
    assert_eq!(n, 50);
}

#[tokio::test]
async fn portals_with_row_limits_suspend_and_resume() {
    let mut client = connect().await;
    let tx = client.transaction().await.unwrap();
    let stmt = tx
        .prepare("select g from generate_series(1, 10) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 3).await.unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 3);
        seen.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn copy_in_and_out_text_csv_binary() {
    let client = connect().await;
    client
        .batch_execute(
            "drop table if exists copy_t; create table copy_t (id int, name text, note text)",
        )
        .await
        .unwrap();
    // Text format in.
    let sink = client.copy_in("copy copy_t from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..1000 {
        data.push_str(&format!("{i}\tname {i}\t\\N\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1000);
    // CSV in.
    let sink = client
        .copy_in("copy copy_t from stdin (format csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"1000,\"quoted, name\",x\n1001,\"\xe5\xbc\xa0\xe4\xb8\x89\",\n",
    ))
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // Binary in.
    let types = [
        tokio_postgres::types::Type::INT4,
        tokio_postgres::types::Type::TEXT,
        tokio_postgres::types::Type::TEXT,
    ];
    let sink = client
        .copy_in("copy copy_t from stdin (format binary)")
        .await
        .unwrap();
    let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
    futures_util::pin_mut!(writer);
    for i in 2000..2010i32 {
        let name = format!("bin {i}");
        writer
            .as_mut()
            .write(&[&i, &name, &None::<String>])
            .await
            .unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 10);

    // Text out.
    let out: Vec<u8> = client
        .copy_out("copy (select * from copy_t order by id) to stdout")
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 1012);
    assert!(text.starts_with("0\tname 0\t\\N\n"));
    assert!(text.contains("1001\t张三\t\\N\n"));
    // CSV out.
    let out: Vec<u8> = client
        .copy_out("copy (select id, name from copy_t where id = 1000) to stdout (format csv)")
        .await
        .unwrap()
        .try_fold(Vec::new(), |mut acc, c| async move {
            acc.extend_from_slice(&c);
            Ok(acc)
        })
        .await
        .unwrap();
    assert_eq!(out, b"1000,\"quoted, name\"\n");
    // Binary out.
    let stream = client
        .copy_out("copy (select id, name, note from copy_t where id >= 2000 order by id) to stdout (format binary)")
        .await
        .unwrap();
    let rows: Vec<_> = tokio_postgres::binary_copy::BinaryCopyOutStream::new(stream, &types)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[3].get::<i32>(0), 2003);
    assert_eq!(rows[3].get::<&str>(1), "bin 2003");
    // psql \copy in both directions.
    let out = psql(
        proxy_addr(),
        "postgres",
        None,
        &[],
        "\\copy copy_t (id, name) from stdin with (format csv)\n5000,psql row\n\\.\n\
         \\copy (select name from copy_t where id = 5000) to stdout\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("psql row"), "{}", stdout(&out));
}

#[tokio::test]
async fn listen_notify_and_notices_reach_the_client() {
    let (client, mut conn) = tokio_postgres::connect(
        &conn_str(proxy_addr(), "postgres", None),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    client.batch_execute("listen hotel_events").await.unwrap();
    let other = connect().await;
    other
        .batch_execute("notify hotel_events, 'room 101 ready'")
        .await
        .unwrap();
    client
        .batch_execute("do $$ begin raise notice 'checked % guests', 3; end $$")
        .await
        .unwrap();
    let mut got_notification = false;
    let mut got_notice = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(got_notification && got_notice) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(AsyncMessage::Notification(n))) => {
                assert_eq!(n.channel(), "hotel_events");
                assert_eq!(n.payload(), "room 101 ready");
                got_notification = true;
            }
            Ok(Some(AsyncMessage::Notice(n))) => {
                assert_eq!(n.message(), "checked 3 guests");
                got_notice = true;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(
        got_notification && got_notice,
        "{got_notification} {got_notice}"
    );
    // psql shows notices on stderr.
    let out = psql(
        proxy_addr(),
        "postgres",
        None,
        &[
            "-c",
            "do $$ begin raise notice 'hello from plpgsql'; end $$",
        ],
        "",
    );
    assert!(
        stderr(&out).contains("NOTICE:  hello from plpgsql"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn parameter_status_is_relayed() {
    let (mut s, msgs) = raw::login(proxy_addr()).await;
    let has = |msgs: &[(u8, Vec<u8>)], needle: &[u8]| {
        msgs.iter()
            .any(|m| m.0 == b'S' && m.1.windows(needle.len()).any(|w| w == needle))
    };
    assert!(has(&msgs, b"server_version\0"), "startup ParameterStatus");
    s.write_all(&raw::query("set application_name = 'front desk'"))
        .await
        .unwrap();
    let msgs = raw::read_until_ready(&mut s).await;
    assert!(has(&msgs, b"application_name\0front desk\0"), "{msgs:?}");
}

#[tokio::test]
async fn function_call_fast_path_via_psql_large_objects() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let dst = dir.path().join("out.bin");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &payload).unwrap();
    // \lo_import and \lo_export use libpq's fast-path FunctionCall messages.
    let script = format!(
        "\\lo_import '{}'\n\\set oid :LASTOID\n\\lo_export :oid '{}'\nselect lo_unlink(:oid);\n",
        src.display(),
        dst.display()
    );
    let out = psql(proxy_addr(), "postgres", None, &[], &script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dst).unwrap(), payload);
}

#[tokio::test]
async fn fifty_megabyte_bytea_round_trip() {
    let client = connect().await;
    client
        .batch_execute("drop table if exists big_t; create table big_t (b bytea)")
        .await
        .unwrap();
    let big: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i * 31 % 256) as u8)
        .collect();
    client
        .execute("insert into big_t values ($1)", &[&big])
        .await
        .unwrap();
    let back: Vec<u8> = client
        .query_one("select b from big_t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(back == big, "50 MB value changed in transit");
    // Text format (hex, ~100 MB on the wire) through the simple protocol.
    let msgs = client
        .simple_query("select length(b::text) from big_t")
        .await
        .unwrap();
    let len = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(len.as_deref(), Some("104857602"));
}

#[tokio::test]
async fn two_hundred_concurrent_connections() {
    let addr = proxy_addr();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let client = connect_to(addr, "postgres", None).await?;
                let row = client.query_one("select $1::int4 + 1", &[&i]).await?;
                // Hold the connection until all have connected.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<i32, tokio_postgres::Error>(row.get(0))
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as i32 + 1);
    }
}

#[tokio::test]
async fn upstream_backend_terminated_mid_session() {
    let victim = connect().await;
    let bystander = connect().await;
    let pid: i32 = victim
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let direct = connect_direct().await;
    direct
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = victim.simple_query("select 1").await.unwrap_err();
    assert!(err.is_closed() || err.code().is_some(), "{err}");
    // Other sessions keep working.
    assert_eq!(
        bystander
            .query_one("select 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
}

#[tokio::test]
async fn terminated_backend_error_reaches_psql() {
    let addr = proxy_addr();
    // psql's own backend terminates itself; the server's FATAL 57P01 must
    // reach psql through pgveil.
    let out = psql(
        addr,
        "postgres",
        None,
        &["-c", "select pg_terminate_backend(pg_backend_pid())"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("terminating connection due to administrator command"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn client_disconnect_closes_its_upstream_connection() {
    let direct = connect_direct().await;
    let client = connect().await;
    client
        .batch_execute("set application_name = 'leaving-client'")
        .await
        .unwrap();
    let n: i64 = direct
        .query_one(
            "select count(*) from pg_stat_activity where application_name = 'leaving-client'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(client);
    let gone = eventually(Duration::from_secs(10), || async {
        let n: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity where application_name = 'leaving-client'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    assert!(gone, "upstream connection outlived its client");
}

#[tokio::test]
async fn pgbench_runs_through_pgveil_in_every_query_mode() {
    let addr = proxy_addr();
    let init = run_tool(
        "pgbench",
        addr,
        "postgres",
        None,
        &["-i", "-q", "-s", "1", "postgres"],
        "",
    );
    assert!(init.status.success(), "{}", stderr(&init));
    for mode in ["simple", "extended", "prepared"] {
        let out = run_tool(
            "pgbench",
            addr,
            "postgres",
            None,
            &["-n", "-c", "4", "-t", "100", "-M", mode, "postgres"],
            "",
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("number of transactions actually processed: 400/400"),
            "{mode}: {}",
            stdout(&out)
        );
        assert!(
            stdout(&out).contains("number of failed transactions: 0"),
            "{}",
            stdout(&out)
        );
    }
}
