//! A private PostgreSQL for a test: `initdb` into a temporary directory,
//! `pg_ctl start` on a free port of a 127.0.0.x address (Unix socket in the same
//! directory, trust authentication for the one local user), a database made for
//! the test; stopped (`pg_ctl stop -m immediate`) and removed on Drop.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres`
//! user the Debian package makes (the directory is handed to it).
//!
//! Only std: the control plane's tests include this file on its own
//! (`#[path]`), without the rest of the support modules.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running private PostgreSQL.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    ip: Ipv4Addr,
    port: u16,
    as_user: Option<String>,
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`), the
/// newest version installed, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // The effective uid, without libc: /proc/self/status's "Uid:" line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl Postgres {
    /// Whether PostgreSQL's programs are installed.
    pub fn available() -> bool {
        bin_dir().is_some()
    }

    /// Starts a server on 127.0.0.`last` (a free port) with database `volley`;
    /// panics with the server's log when it cannot.
    pub fn start(last: u8) -> Postgres {
        match Postgres::try_start(last) {
            Ok(pg) => pg,
            Err(e) => panic!("cannot start a private PostgreSQL: {e}"),
        }
    }

    /// [`Postgres::start`], with the reason as an error.
    pub fn try_start(last: u8) -> Result<Postgres, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed (Debian package postgresql)")?;
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let dir = tempfile::Builder::new()
            .prefix("volley-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let as_user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &as_user {
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown -R {user} {} failed", dir.path().display()));
            }
        }
        let mut pg = Postgres {
            dir,
            bin,
            ip,
            port: 0,
            as_user,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "volley",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        // The port can be taken between the probe and the bind: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            pg.port = free_port(ip);
            let options = format!(
                "-c listen_addresses={ip} -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("server.log").display().to_string();
            match pg.run(
                "pg_ctl",
                &[
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &log,
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => {
                    pg.wait_ready(Duration::from_secs(30))?;
                    pg.run(
                        "createdb",
                        &[
                            "-h",
                            &ip.to_string(),
                            "-p",
                            &pg.port.to_string(),
                            "-U",
                            "volley",
                            "volley",
                        ],
                    )?;
                    return Ok(pg);
                }
                Err(e) => last_error = format!("{e}\n{}", pg.log()),
            }
        }
        Err(last_error)
    }

    /// Stops the server at once (fast shutdown: every connection is cut), as
    /// an outage would.
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data_dir().display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
        )
    }

    /// Starts it again after [`Postgres::stop`], on the same address and port.
    pub fn start_again(&self) -> Result<(), String> {
        let data = self.data_dir().display().to_string();
        let options = format!(
            "-c listen_addresses={} -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.ip,
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )?;
        self.wait_ready(Duration::from_secs(30))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut cmd = match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // The temp dir as working directory: the postgres user may not be
        // able to read the test's.
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn wait_ready(&self, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if TcpStream::connect(SocketAddrV4::new(self.ip, self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "PostgreSQL not listening on {}:{}\n{}",
            self.ip,
            self.port,
            self.log()
        ))
    }

    /// The URL of its `volley` database.
    pub fn url(&self) -> String {
        format!("postgres://volley@{}:{}/volley", self.ip, self.port)
    }

    /// A URL of a new, empty database `name` on the same server.
    pub fn new_database(&self, name: &str) -> String {
        if let Err(e) = self.run(
            "createdb",
            &[
                "-h",
                &self.ip.to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "volley",
                name,
            ],
        ) {
            panic!("{e}");
        }
        format!("postgres://volley@{}:{}/{name}", self.ip, self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data_dir().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("bind {ip}:0 for a free port: {e}"))
}
