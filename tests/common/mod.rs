//! Helpers for end-to-end tests that drive the real `updraft` binary.

#![allow(dead_code)] // Each test file uses its own subset.

pub mod postgres;
pub mod proxy;
pub mod receivers;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, where `dags/` and `tests/` live.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `updraft` run from the repository root with its own home folder, so a test never reads or
/// writes `~/.updraft`, and with no `UPDRAFT_*` variables of the caller leaking in.
pub fn updraft(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_updraft"));
    command.current_dir(repo()).env("UPDRAFT_HOME", home);
    for (name, _) in std::env::vars() {
        if name.starts_with("UPDRAFT_") && name != "UPDRAFT_HOME" {
            command.env_remove(name);
        }
    }
    command
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(mut command: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the updraft binary runs");
    (
        status
            .code()
            .expect("updraft exits, not killed by a signal"),
        String::from_utf8(stdout).expect("stdout is UTF-8"),
        String::from_utf8(stderr).expect("stderr is UTF-8"),
    )
}

/// A running `updraft standalone` (or any long-running `updraft` command), killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    /// What it printed to stdout before it was considered started.
    pub banner: String,
    /// Where its stderr goes (read it on failure).
    pub stderr_path: PathBuf,
}

impl Running {
    /// Starts `command` with stdout piped and stderr to `stderr_path`; waits for the first
    /// `lines` lines of stdout (the banner), at most 60 s.
    pub fn start(mut command: Command, stderr_path: &Path, lines: usize) -> Running {
        use std::io::BufRead;
        let stderr = std::fs::File::create(stderr_path).expect("stderr file");
        command
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .stdin(std::process::Stdio::null());
        let mut child = command.spawn().expect("updraft starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut banner = String::new();
            for _ in 0..lines {
                if reader.read_line(&mut banner).unwrap_or(0) == 0 {
                    break;
                }
            }
            let _ = sender.send(banner);
            // Keep draining so the child never blocks on a full pipe.
            std::io::copy(&mut reader, &mut std::io::sink()).ok();
        });
        let banner = receiver
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "updraft did not start: {}",
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                )
            });
        Running {
            child,
            banner,
            stderr_path: stderr_path.to_owned(),
        }
    }

    /// `updraft standalone --port 0` on `dags_folder` with `home`, extra arguments appended
    /// (e.g. `--zombie-threshold 3s`), and `env` set.
    pub fn standalone(
        home: &Path,
        dags_folder: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        let mut command = updraft(home);
        command
            .arg("--dags-folder")
            .arg(dags_folder)
            .args(["standalone", "--port", "0"])
            .args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        Running::start(command, &home.join("standalone.stderr"), 5)
    }

    /// The web server's address from the banner (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.banner
            .lines()
            .find_map(|line| line.split_whitespace().find(|w| w.starts_with("http://")))
            .expect("the banner names the web server")
            .to_owned()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `deadline` for a clean exit; returns its exit code.
    pub fn terminate(&mut self, deadline: std::time::Duration) -> Option<i32> {
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, at most `deadline`; panics with `what`.
pub fn wait_for<T>(
    what: &str,
    deadline: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The largest number of intervals that contain one instant.
pub fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // Ends before starts at the same instant: touching intervals do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut open = 0;
    let mut most = 0;
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

/// A minimal HTTP/1.1 GET of `path` from the web server at `base` with an API token; the whole
/// answer, status line first.
pub fn http_get(base: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
