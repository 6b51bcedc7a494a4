//! A Postgres server of a test's own, for tests that stop and start it under running processes
//! (the shared server on 5432 is never touched).

use std::path::PathBuf;
use std::process::Command;

/// A Postgres server of the test's own: a cluster in a temporary folder (its socket there too)
/// on a free port, run as the `postgres` OS user when the test runs as root. Stopped when
/// dropped, also when the test panics. The shared server on 5432 is never touched.
pub struct Postgres {
    /// Owned by the server's OS user; holds `data/`, the socket and `postgres.log`.
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid to run the server's programs as (through `runuser`), when not our own.
    as_postgres: bool,
}

impl Postgres {
    /// Creates and starts the cluster. `None` only when the test may be skipped: locally with
    /// `UPDRAFT_TEST_POSTGRES=skip` (the rule of `updraft_metadata::testing`); otherwise a
    /// missing `initdb` fails the test, and under `CI=true` always.
    pub fn start() -> Option<Postgres> {
        use updraft_metadata::Backend;
        use updraft_metadata::testing::backends;
        if !backends().contains(&Backend::Postgres) {
            eprintln!("skipped: UPDRAFT_TEST_POSTGRES=skip (not under CI)");
            return None;
        }
        let bin = postgres_bin().unwrap_or_else(|| {
            panic!(
                "this test runs a Postgres server of its own and needs initdb and pg_ctl in \
                 /usr/lib/postgresql/<version>/bin (Debian: apt-get install postgresql); none \
                 found. Locally, UPDRAFT_TEST_POSTGRES=skip leaves the Postgres tests out \
                 (ignored when CI=true)."
            )
        });
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let root = tempfile::tempdir().expect("a temporary folder for Postgres");
        if as_postgres {
            let id = |flag: &str| -> u32 {
                let output = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id runs");
                assert!(
                    output.status.success(),
                    "running as root, this test runs Postgres as the OS user postgres, which \
                     does not exist: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            std::os::unix::fs::chown(root.path(), Some(id("-u")), Some(id("-g")))
                .expect("give the cluster's folder to postgres");
        }
        let mut postgres = Postgres {
            root,
            bin,
            port: 0,
            as_postgres,
        };
        let data = postgres.data();
        let data = data.to_str().unwrap();
        postgres.ok(
            "initdb",
            &["-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        // Another process may take the free port before the server binds it: try a few.
        for _ in 0..5 {
            postgres.port = free_port();
            if postgres.pg_ctl_start() {
                return Some(postgres);
            }
        }
        panic!("Postgres did not start:\n{}", postgres.log());
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Where the server listens (TCP, on the loopback).
    pub fn address(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
    }

    /// One of the server's programs, as its OS user, in the cluster's folder.
    fn program(&self, name: &str, args: &[&str]) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(name));
            command
        } else {
            Command::new(self.bin.join(name))
        };
        command.args(args).current_dir(self.root.path());
        command
    }

    fn ok(&self, name: &str, args: &[&str]) {
        let output = self
            .program(name, args)
            .output()
            .expect("a Postgres program runs");
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Starts the server on `self.port`; false when it did not start.
    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("postgres.log");
        let data = self.data();
        self.program(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .output()
        .expect("pg_ctl runs")
        .status
        .success()
    }

    pub fn start_again(&self) {
        assert!(
            self.pg_ctl_start(),
            "Postgres did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn stop(&self, mode: &str) -> bool {
        let data = self.data();
        self.program(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        )
        .output()
        .is_ok_and(|output| output.status.success())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fails harmlessly when the server is not running.
        self.stop("immediate");
    }
}

/// The folder of the newest installed `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
