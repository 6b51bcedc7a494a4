//! A TCP proxy a test can cut: one process's link to the database fails while the others keep
//! theirs (a network partition seen from one machine). Cut, its open connections are shut down
//! and new ones are closed as soon as they are accepted, so the process behind it gets errors
//! at once, as from a database that went away; restored, it forwards again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Forwards connections to `listen` on to `target`, until dropped.
pub struct Proxy {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    /// Both ends of every connection forwarded so far (shut down when cut).
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on `ip` (a loopback address such as 127.0.0.2) on a free port.
    pub fn start(ip: &str, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).expect("the proxy listens");
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let (accept_open, accept_streams, accept_stopped) =
            (open.clone(), streams.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !accept_open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let mut kept = accept_streams.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                drop(kept);
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Proxy {
            address,
            open,
            streams,
            stopped,
        }
    }

    /// `postgres://postgres@ADDRESS/postgres` through this proxy.
    pub fn postgres_url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.address)
    }

    /// Shuts down every forwarded connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.address);
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
