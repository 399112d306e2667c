//! A throwaway PostgreSQL server: initdb into a temporary directory, start
//! on a free loopback port, remove everything on drop.
//!
//! The demo and the test suite both use this, so the tests exercise the same
//! setup a user sees. PostgreSQL refuses to run as root; when pgveil runs as
//! root the server runs as the `postgres` OS user (or `nobody`).
//!
//! Roles created for the tests: the superuser `postgres` (trust), `scram_user`
//! (SCRAM-SHA-256, password `scram_pass`) and `md5_user` (md5, `md5_pass`).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why the throwaway server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum TempDbError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "pgveil: PostgreSQL server binaries (initdb, postgres) not found in PATH or \
         /usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql`"
    )]
    NoBinaries,
    /// A filesystem or process operation failed.
    #[error("pgveil: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PostgreSQL tool exited with an error.
    #[error("pgveil: {tool} failed: {stderr}")]
    Tool {
        /// The program that failed.
        tool: String,
        /// Its error output.
        stderr: String,
    },
    /// The server did not accept connections in time.
    #[error("pgveil: PostgreSQL did not start within {0:?}; see its log at {1}")]
    NotReady(Duration, PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TempDbError {
    let what = what.into();
    move |source| TempDbError::Io { what, source }
}

/// A running throwaway server. Dropping it stops the server and deletes its
/// data directory.
#[derive(Debug)]
pub struct TempDb {
    child: Option<Child>,
    /// A shell waiting on a pipe we hold: when this process goes away in any
    /// way (even SIGKILL) the pipe closes and the shell stops the server and
    /// deletes the directory, so tests that keep a `TempDb` in a `static`
    /// leave nothing behind.
    watchdog: Option<Child>,
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
}

/// Extra `postgresql.conf` settings for [`TempDb::start_with`].
pub type Settings<'a> = &'a [(&'a str, &'a str)];

impl TempDb {
    /// Starts a server with settings suited to tests.
    pub fn start() -> Result<TempDb, TempDbError> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `postgresql.conf` settings.
    pub fn start_with(settings: Settings<'_>) -> Result<TempDb, TempDbError> {
        Self::start_inner(settings, None)
    }

    /// Starts a server that also accepts TLS (`ssl = on`) with the given
    /// PEM certificate and key; plaintext connections still work.
    pub fn start_with_tls(
        settings: Settings<'_>,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<TempDb, TempDbError> {
        Self::start_inner(settings, Some((cert_pem, key_pem)))
    }

    fn start_inner(
        settings: Settings<'_>,
        tls: Option<(&str, &str)>,
    ) -> Result<TempDb, TempDbError> {
        let bindir = find_bindir().ok_or(TempDbError::NoBinaries)?;
        let run_as = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("pgveil-db-")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io("hand the data directory to the postgres user"))?;
        }
        let mut db = TempDb {
            child: None,
            watchdog: None,
            dir,
            bindir,
            port: 0,
            run_as,
        };
        db.watchdog = Some(spawn_watchdog(db.dir.path())?);
        db.initdb()?;
        let mut settings = settings.to_vec();
        if let Some((cert, key)) = tls {
            db.write_tls_files(cert, key)?;
            settings.extend([
                ("ssl", "on"),
                ("ssl_cert_file", "'server.crt'"),
                ("ssl_key_file", "'server.key'"),
            ]);
        }
        db.write_conf(&settings)?;
        db.launch()?;
        db.create_roles()?;
        Ok(db)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Directory holding PostgreSQL's programs (psql, pgbench, ...).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // initdb looks up the current user's name via $USER/getpwuid;
            // HOME must be readable by that user.
            cmd.env("HOME", self.dir.path());
        }
        cmd.env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .env_remove("PGDATABASE")
            .env_remove("PGPASSWORD");
        cmd
    }

    fn initdb(&self) -> Result<(), TempDbError> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .output()
            .map_err(io("run initdb"))?;
        check("initdb", out)
    }

    /// Writes the server's certificate and key into the data directory,
    /// owned by the server's user and private (PostgreSQL refuses a key
    /// that others can read).
    fn write_tls_files(&self, cert: &str, key: &str) -> Result<(), TempDbError> {
        use std::os::unix::fs::PermissionsExt;
        for (name, text) in [("server.crt", cert), ("server.key", key)] {
            let path = self.data().join(name);
            std::fs::write(&path, text).map_err(io(format!("write {name}")))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("chmod {name}")))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(io(format!("hand {name} to the postgres user")))?;
            }
        }
        Ok(())
    }

    fn write_conf(&mut self, settings: Settings<'_>) -> Result<(), TempDbError> {
        let hba = "host all md5_user 127.0.0.1/32 md5\n\
                   host all scram_user 127.0.0.1/32 scram-sha-256\n\
                   host all all 127.0.0.1/32 trust\n";
        std::fs::write(self.data().join("pg_hba.conf"), hba).map_err(io("write pg_hba.conf"))?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .map_err(io("open postgresql.conf"))?;
        let mut text = String::from(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 128MB\n",
        );
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        conf.write_all(text.as_bytes())
            .map_err(io("write postgresql.conf"))
    }

    fn launch(&mut self) -> Result<(), TempDbError> {
        let started = Instant::now();
        let limit = Duration::from_secs(60);
        // A free port can be taken between probing and binding; try again.
        for _ in 0..5 {
            self.port = free_port().map_err(io("find a free port"))?;
            let log = std::fs::File::create(self.log_path()).map_err(io("create the log file"))?;
            if let Some((uid, gid)) = self.run_as {
                let _ = std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid));
            }
            let child = self
                .command("postgres")
                .arg("-D")
                .arg(self.data())
                .args(["-p", &self.port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("open the log file"))?)
                .stderr(log)
                .spawn()
                .map_err(io("start postgres"))?;
            self.child = Some(child);
            loop {
                if self.ready() {
                    return Ok(());
                }
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        self.child = None;
                        break; // died: probably the port; try another
                    }
                }
                if started.elapsed() > limit {
                    return Err(TempDbError::NotReady(limit, self.log_path()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(TempDbError::NotReady(started.elapsed(), self.log_path()))
    }

    fn ready(&self) -> bool {
        self.command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn create_roles(&self) -> Result<(), TempDbError> {
        self.psql(
            "CREATE ROLE scram_user LOGIN PASSWORD 'scram_pass';\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE md5_user LOGIN PASSWORD 'md5_pass';\n\
             GRANT ALL ON SCHEMA public TO PUBLIC;\n",
        )
        .map(|_| ())
    }

    /// Runs SQL as the superuser directly against the server (not through
    /// pgveil) and returns psql's unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, TempDbError> {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(sql.as_bytes())?;
                }
                child.wait_with_output()
            })
            .map_err(io("run psql"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        check("psql", out)?;
        Ok(stdout)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

impl TempDb {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: immediate shutdown; nothing here needs to survive.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the shell that cleans up after us if we die without dropping.
fn spawn_watchdog(dir: &Path) -> Result<Child, TempDbError> {
    const SCRIPT: &str = r#"read _ignored
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
  kill -QUIT "$pid" 2>/dev/null
  n=0
  while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
fi
rm -rf "$1""#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("pgveil-tempdb-watchdog")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("start the cleanup watchdog"))
}

fn check(tool: &str, out: Output) -> Result<(), TempDbError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(TempDbError::Tool {
            tool: tool.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Asks the kernel for a free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Finds the directory with `initdb` and `postgres`: `PATH` first, then
/// Debian's versioned directories, newest first.
pub fn find_bindir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_isready", "psql"]
            .iter()
            .all(|p| d.join(p).exists())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let initdb = d.join("initdb");
            if let Ok(real) = std::fs::canonicalize(&initdb) {
                if let Some(dir) = real.parent() {
                    if has_all(dir) {
                        return Some(dir.to_owned());
                    }
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// The uid/gid to run PostgreSQL as when we are root, `None` otherwise.
fn unprivileged_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    ["postgres", "nobody"].iter().find_map(|name| {
        let user = nix::unistd::User::from_name(name).ok()??;
        Some((user.uid.as_raw(), user.gid.as_raw()))
    })
}
