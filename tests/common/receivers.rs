//! Real receivers of notifications on the loopback: an HTTP server the test runs in a thread,
//! and an SMTP server (aiosmtpd, from PyPI) that keeps each mail in a maildir.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on 127.0.0.1 that records every request and answers by path: `/fail` with
/// 500, `/slow` after 15 s (past a sender's timeout), anything else with 200.
pub struct HttpReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || answer(stream, &record));
            }
        });
        HttpReceiver { url, received }
    }

    /// What it got so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// What it got on `path`.
    pub fn on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

fn answer(stream: TcpStream, record: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    record.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
    });
    let status = match path.as_str() {
        "/fail" => "500 Internal Server Error",
        "/slow" => {
            std::thread::sleep(Duration::from_secs(15));
            "200 OK"
        }
        _ => "200 OK",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

/// An SMTP server on 127.0.0.1 (aiosmtpd's `Mailbox` handler) that keeps each mail it gets
/// in a maildir. `None` where aiosmtpd is not installed, except under CI (a panic then).
pub struct SmtpSink {
    pub port: u16,
    maildir: PathBuf,
    child: Child,
}

impl SmtpSink {
    pub fn start(folder: &Path) -> Option<SmtpSink> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            assert!(
                std::env::var("CI").is_err(),
                "aiosmtpd is missing: python3 -m pip install aiosmtpd (.ci/run does)"
            );
            eprintln!("skipped: no aiosmtpd (python3 -m pip install aiosmtpd)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = folder.join("maildir");
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        super::wait_for("the SMTP sink to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(SmtpSink {
            port,
            maildir,
            child,
        })
    }

    /// The mails it kept, each as its whole text.
    pub fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
