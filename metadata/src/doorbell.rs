//! Wake-ups between processes that share a SQLite file, as LISTEN/NOTIFY gives them on
//! Postgres: a trigger, clear, mark or pause written by the CLI reaches a running `standalone`
//! in milliseconds instead of at its next look.
//!
//! Each store that waits for wake-ups binds a Unix datagram socket in a folder beside the
//! database file (`<file>.wake/<pid>-<n>.sock`); every write that wakes sends its news, after
//! its commit, to every other socket there (the same text as a Postgres payload, after a
//! letter for the topic). A socket whose process died refuses the datagram and is removed.
//! Where no socket can be bound (a read-only folder, a path too long for a socket) the store
//! is only woken by its own process, and finds other processes' writes at its next sweep.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::signal::{Changes, Signals, Topic};

/// How long the list of other processes' sockets is trusted before the folder is read again.
const PEERS_FRESH: Duration = Duration::from_secs(1);

/// The longest socket path (`sun_path` holds 108 bytes with its NUL).
const MOST_SOCKET_PATH: usize = 107;

/// Tells one store's socket from another's in the same process.
static BOUND: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Doorbell {
    folder: PathBuf,
    /// An unbound socket to send from.
    sender: Option<UnixDatagram>,
    /// This store's socket and the task that reads it, once bound.
    own: Mutex<Option<(PathBuf, JoinHandle<()>)>>,
    /// The sockets of the other stores, and when the folder was read.
    peers: Mutex<Option<(Instant, Vec<PathBuf>)>>,
}

impl Doorbell {
    /// The doorbell of the SQLite database at `file`.
    pub(crate) fn new(file: &Path) -> Doorbell {
        let mut folder = file.as_os_str().to_owned();
        folder.push(".wake");
        let sender = UnixDatagram::unbound()
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .ok();
        Doorbell {
            folder: PathBuf::from(folder),
            sender,
            own: Mutex::new(None),
            peers: Mutex::new(None),
        }
    }

    /// Binds this store's socket (once) and forwards what arrives to `signals`.
    pub(crate) fn listen(&self, signals: &Arc<Signals>) {
        let mut own = self.own.lock().expect("no panic holds the doorbell");
        if own.is_some() {
            return;
        }
        let name = format!(
            "{}-{}.sock",
            std::process::id(),
            BOUND.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.folder.join(name);
        let bound = match path.as_os_str().len() > MOST_SOCKET_PATH {
            true => Err(std::io::Error::other("the path is too long for a socket")),
            false => std::fs::create_dir_all(&self.folder)
                .and_then(|()| tokio::net::UnixDatagram::bind(&path)),
        };
        let socket = match bound {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(
                    "cannot bind {} ({error}): other processes' changes to the database are \
                     seen at the next sweep (30 s), not at once",
                    path.display()
                );
                return;
            }
        };
        let signals = signals.clone();
        let task = tokio::spawn(async move {
            let mut message = vec![0; 8192];
            while let Ok(length) = socket.recv(&mut message).await {
                deliver(&message[..length], &signals);
            }
        });
        *own = Some((path, task));
    }

    /// Sends `topic`'s news to every other store's socket.
    pub(crate) fn ring(&self, topic: Topic, payload: &str) {
        let Some(sender) = &self.sender else { return };
        let message = match topic {
            Topic::Scheduler => format!("s{payload}"),
            Topic::Workers => "w".to_owned(),
        };
        let own = self
            .own
            .lock()
            .expect("no panic holds the doorbell")
            .as_ref()
            .map(|(path, _)| path.clone());
        let mut peers = self.peers.lock().expect("no panic holds the doorbell");
        if peers
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() >= PEERS_FRESH)
        {
            *peers = Some((Instant::now(), self.read_peers()));
        }
        let Some((_, list)) = peers.as_mut() else {
            return;
        };
        list.retain(|peer| {
            if own.as_ref() == Some(peer) {
                return true;
            }
            match sender.send_to(message.as_bytes(), peer) {
                Ok(_) => true,
                // A process that died left its socket: nobody reads it any more.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(peer);
                    false
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
                // A full queue: its reader is busy, and will look anyway.
                Err(_) => true,
            }
        });
    }

    fn read_peers(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.folder) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sock"))
            .collect()
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        if let Some((path, task)) = self.own.get_mut().ok().and_then(Option::take) {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Hands a datagram's news to this store's loops.
fn deliver(message: &[u8], signals: &Signals) {
    let Ok(message) = std::str::from_utf8(message) else {
        return;
    };
    match message.split_at_checked(1) {
        Some(("w", _)) => signals.bump(Topic::Workers),
        Some(("s", payload)) => signals.tell(&Changes::parse(payload)),
        _ => {}
    }
}
