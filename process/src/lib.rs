//! Running one command as a child process in its own process group (DESIGN §6): a task try or a
//! handler. [`run`] owns the process from spawn to its last byte of output and says how it ended;
//! it never touches the database and never panics on I/O: what goes wrong is an [`Ending`] or a
//! line in the log.
//!
//! Decisions:
//! - **No `pre_exec` hook.** The child gets its own process group through `process_group(0)`,
//!   which std spawns with `posix_spawn` (`POSIX_SPAWN_SETPGROUP`), so starting a try does not
//!   fork a copy of the worker's memory. The child's pid is its process group id; `on_start`
//!   hands it to the caller as soon as the child exists.
//! - **One pipe for stdout and stderr.** Both are the write end of the same pipe, as `2>&1`
//!   would make them, so the log keeps the order in which the process wrote. Each chunk is what
//!   one read returned (at most 64 KiB). When the log's receiver is gone, reading goes on and the
//!   chunks are dropped: a child must never block on a full pipe.
//! - **The try owns its process group; nothing it started outlives it.** On a timeout or a cancel
//!   the whole group gets SIGTERM, then SIGKILL if anything is left after `kill_grace`. When the
//!   main process ends by itself, whatever it left running in the group (a `sleep 300 &` that was
//!   not waited for) is ended the same way: it would otherwise hold the pipe open, and the try
//!   would never end. The group counts as empty when it has no process left but zombies (read
//!   from `/proc`): where init does not reap orphans (some containers), their zombies would
//!   otherwise keep the group looking alive for the whole grace period.
//! - **Reading stops shortly after the group is gone.** A process that left the group (`setsid`)
//!   may still hold the pipe; once the group is gone, the pipe is read only while data keeps
//!   coming (a pause of `DRAIN_IDLE` ends it) and for at most `DRAIN_LIMIT` more bytes.
//! - **Outputs** (`$UPDRAFT_OUTPUT`) are `name=value` lines in a file the child may write; the
//!   file is read (and removed) after the process ended. Its path is new in the caller's private
//!   [`OutputFolder`] and the file does not exist until the child writes to it (`>>` creates
//!   it): a process that writes no outputs costs no file. (Creating and deleting a temp file per
//!   try was a third of a worker's CPU on ext4, which searches for a free inode at every
//!   create.) Blank lines are skipped, a bad line is a warning in the log, a later value of the
//!   same name replaces the earlier one (the name keeps its first place), and a value is
//!   everything after the first `=` but a trailing `\r`. A value with a NUL byte is a warning
//!   too: Postgres stores no NUL in text, and would refuse the try's whole end.
//! - **A try records its own exit** ([`TryFiles`]): its shell writes `$?` to a file from an
//!   `EXIT` trap (`exec:` commands run under a shell for it), so a try whose worker died while
//!   it ran leaves its outcome behind, and the worker's next life adopts it instead of running
//!   the command again. The files are on a file system that outlives the worker (`/dev/shm`
//!   where there is one), in a private folder per worker name ([`TryFolder`]); the shell that
//!   was already there is the supervisor, so a try costs no process more (an `exec:` one, a
//!   shell). A command that replaces its shell (`exec prog` as its last word) or sets its own
//!   `EXIT` trap records nothing: its try is one that did not finish, retried.
//! - **A clean environment.** The process gets none of its parent's environment but the
//!   basics (`PATH`, `HOME`, `LANG`, `TZ`, `USER`) and the names a caller lists
//!   ([`Spawn::inherit_env`]), never an `UPDRAFT_*` one (`updraft_core::worker_env`): a worker's
//!   environment holds the metadata database's URL, and a task must not read it. `PATH` is
//!   `/usr/local/bin:/usr/bin:/bin` when the parent has none.
//! - **Dropping [`run`]'s future** (the caller shut down mid-try) SIGKILLs the group.

use std::collections::HashMap;
use std::future::{Future, pending};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use updraft_core::dag::Command;
use updraft_core::ids::TryKey;
use updraft_core::secret::Masker;
use updraft_core::worker_env;

/// The most one read of the pipe returns, so the most one log chunk holds.
const CHUNK_SIZE: usize = 64 * 1024;
/// The most the first read of the pipe returns.
const FIRST_CHUNK_SIZE: usize = 4 * 1024;
/// How often a process group being stopped is checked for processes left.
const GROUP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Once the group is gone, a pipe that stays quiet this long is not read any more.
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// Once the group is gone, at most this many more bytes are read: more than the pipe holds
/// (64 KiB on Linux), so all the group wrote, but not the endless output of a process that left it.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// `Run` goes through `/bin/sh -c`; `Exec` is the argv, without a shell (its program is
    /// looked up in `PATH`, the one of `env` when it sets one).
    pub command: Command,
    /// The process's environment, with `UPDRAFT_OUTPUT` set on top; of the worker's own, it
    /// gets only the basics and these names (`updraft_core::worker_env`).
    pub env: Vec<(String, String)>,
    /// Names of the worker's environment passed on besides the basics.
    pub inherit_env: Vec<String>,
    pub working_dir: PathBuf,
    /// From the start of the process; `None` runs it as long as it takes.
    pub timeout: Option<Duration>,
    /// Where `$UPDRAFT_OUTPUT` points, and where a try records its exit.
    pub files: Files,
    /// How long the group has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The main process exited by itself with this code.
    Exited(i32),
    /// The main process was killed by this signal, and not because of a timeout or a cancel.
    Signalled(i32),
    /// The timeout (this long) passed; the group was stopped.
    TimedOut(Duration),
    /// The cancel future fired; the group was stopped.
    Cancelled,
    /// The process could not be started; the message says why.
    SpawnFailed(String),
    /// The process could not be waited for (its group was stopped); the message says why.
    WaitFailed(String),
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub ending: Ending,
    /// From `$UPDRAFT_OUTPUT`, in the order the names first appeared.
    pub outputs: Vec<(String, String)>,
    /// The process's pid, which is also its process group id; `None` when it did not start.
    pub pid: Option<u32>,
}

/// Where a process's files go.
#[derive(Debug, Clone)]
pub enum Files {
    /// A new path in this folder for `$UPDRAFT_OUTPUT`, removed once read (handlers, `tasks
    /// test`); no exit record.
    Scratch(Arc<OutputFolder>),
    /// A try's files, which stay until the caller removes them (once its end is stored).
    Try(TryFiles),
}

/// The files of one try: `$UPDRAFT_OUTPUT`, and the exit status its shell records.
#[derive(Debug, Clone)]
pub struct TryFiles {
    pub output: PathBuf,
    pub exit: PathBuf,
}

impl TryFiles {
    /// The exit status the try's shell recorded; `None` when it recorded none (it still runs,
    /// or never ended by itself).
    pub fn recorded_exit(&self) -> Option<i32> {
        let text = std::fs::read_to_string(&self.exit).ok()?;
        text.trim().parse().ok()
    }

    /// The outputs the try wrote, and a warning for each bad line.
    pub fn outputs(&self) -> (Vec<(String, String)>, Vec<String>) {
        match std::fs::read(&self.output) {
            Ok(bytes) => parse_outputs(&String::from_utf8_lossy(&bytes)),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    /// Removes both files (those that exist).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.output);
        let _ = std::fs::remove_file(&self.exit);
    }
}

/// A worker's folder of try files, named after the worker and its database, so that its next
/// life finds what a try left (and a namesake of another installation on the host does not):
/// `/dev/shm/updraft-<uid>/<name>@<hash of the database URL>` (a tmpfs, where creating and
/// removing a file per try costs next to nothing, and which outlives the worker but not the
/// machine), or the same under the temporary folder where there is no `/dev/shm`. Made on
/// first use, owner only.
#[derive(Debug, Clone)]
pub struct TryFolder {
    path: PathBuf,
}

impl TryFolder {
    /// `database` is the store's URL as shown (its password redacted).
    pub fn of_worker(database: &str, name: &str) -> TryFolder {
        let base = match Path::new("/dev/shm").is_dir() {
            true => PathBuf::from("/dev/shm"),
            false => std::env::temp_dir(),
        };
        // SAFETY: getuid(2) cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        let name: String = name
            .chars()
            .map(|c| match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_' => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect();
        let database = updraft_core::hash::fnv1a(database.as_bytes());
        TryFolder {
            path: base
                .join(format!("updraft-{uid}"))
                .join(format!("{name}@{database:016x}")),
        }
    }

    /// The files of a try; the folder is made if missing.
    pub fn files(&self, key: TryKey) -> io::Result<TryFiles> {
        self.make()?;
        Ok(self.files_at(key))
    }

    /// Removes every try's files (what is left of tries a previous life did not settle).
    pub fn clear(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The files of a try, if the folder exists; nothing is made.
    pub fn files_at(&self, key: TryKey) -> TryFiles {
        let TryKey {
            task_instance: id,
            try_number,
        } = key;
        TryFiles {
            output: self.path.join(format!("{id}-{try_number}.output")),
            exit: self.path.join(format!("{id}-{try_number}.exit")),
        }
    }

    /// Makes the folder (and its parent) for this user alone; refuses one another user owns.
    fn make(&self) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if self.path.is_dir() {
            return Ok(());
        }
        let parent = self.path.parent().expect("the folder has a parent");
        for folder in [parent, &self.path] {
            match std::fs::DirBuilder::new().mode(0o700).create(folder) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error),
            }
            let metadata = std::fs::symlink_metadata(folder)?;
            // SAFETY: getuid(2) cannot fail and touches no memory.
            let uid = unsafe { libc::getuid() };
            if !metadata.is_dir() || metadata.uid() != uid || metadata.mode() & 0o077 != 0 {
                return Err(io::Error::other(format!(
                    "{} is not a private folder of this user",
                    folder.display()
                )));
            }
        }
        Ok(())
    }
}

/// The shell's `EXIT` trap that records a try's exit status (see the module's decisions).
const RECORD_EXIT: &str = "trap 'printf \"%s\\n\" \"$?\" > \"$UPDRAFT_TRY_EXIT\"' EXIT";

/// A private folder (mode 0700, made on first use, removed when dropped) where the processes a
/// caller starts write their outputs: each gets a path of its own in it (see the module's
/// decisions).
#[derive(Debug, Default)]
pub struct OutputFolder {
    folder: Mutex<Option<TempDir>>,
    made: AtomicU64,
}

impl OutputFolder {
    /// A path in the folder that no process of it was given before; nothing is created there.
    fn new_path(&self) -> io::Result<PathBuf> {
        let mut folder = self.folder.lock().expect("output folder lock");
        let folder = match &mut *folder {
            Some(folder) => folder,
            None => folder.insert(
                tempfile::Builder::new()
                    .prefix("updraft-outputs-")
                    .tempdir()?,
            ),
        };
        let number = self.made.fetch_add(1, Ordering::Relaxed);
        Ok(folder.path().join(format!("output-{number}")))
    }
}

/// A handler (a task's or a DAG's `on_success`, `on_failure`, `on_retry`) still running after
/// this long is stopped: a handler that hangs must not pile up beside its worker or scheduler.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a stopped handler has between SIGTERM and SIGKILL.
pub const HANDLER_KILL_GRACE: Duration = Duration::from_secs(5);
/// The output of a handler that is kept: its first bytes, enough to see what it did, not a
/// flood.
pub const HANDLER_LOG_BYTES: usize = 64 * 1024;

/// Runs a handler to its end (within the timeout `spawn` sets) and returns how it ended and its
/// output, masked by `masker` and cut at [`HANDLER_LOG_BYTES`] (saying so). Dropping the
/// future stops the handler's process group, as [`run`]'s.
pub async fn run_handler(spawn: Spawn, mut masker: Masker) -> (Ending, Vec<u8>) {
    let (log, mut chunks) = mpsc::channel::<Vec<u8>>(64);
    let collect = async move {
        let mut output = Vec::new();
        let mut cut = false;
        let mut keep = |chunk: Vec<u8>| {
            let room = HANDLER_LOG_BYTES.saturating_sub(output.len());
            cut |= chunk.len() > room;
            output.extend_from_slice(&chunk[..chunk.len().min(room)]);
        };
        while let Some(chunk) = chunks.recv().await {
            keep(masker.push(&chunk));
        }
        keep(masker.finish());
        if cut {
            let note = format!("\nupdraft: the output was cut at {HANDLER_LOG_BYTES} bytes\n");
            output.extend_from_slice(note.as_bytes());
        }
        output
    };
    let (finished, output) = tokio::join!(run(spawn, log, pending(), |_| {}), collect);
    (finished.ending, output)
}

/// Runs `spawn` to its end, sending its output to `log` as it comes. `on_start` gets the pid as
/// soon as the process exists; when `cancel` completes, the process group is stopped.
pub async fn run(
    spawn: Spawn,
    log: mpsc::Sender<Vec<u8>>,
    cancel: impl Future<Output = ()>,
    on_start: impl FnOnce(u32),
) -> Finished {
    let Started {
        mut child,
        pid,
        pipe,
        output_file,
    } = match start(&spawn) {
        Ok(started) => started,
        Err(message) => {
            note(&log, &message).await;
            return Finished {
                ending: Ending::SpawnFailed(message),
                outputs: Vec::new(),
                pid: None,
            };
        }
    };
    on_start(pid);
    let mut guard = KillOnDrop {
        pgid: pid,
        armed: true,
    };
    let (group_gone, group_gone_rx) = oneshot::channel();
    let supervised = async {
        let ending = supervise(&mut child, pid, &spawn, cancel, &log).await;
        let _ = group_gone.send(());
        ending
    };
    let (ending, ()) = tokio::join!(supervised, pump(pipe, &log, group_gone_rx));
    guard.armed = false;
    let outputs = read_outputs(&output_file, matches!(spawn.files, Files::Scratch(_)), &log).await;
    Finished {
        ending,
        outputs,
        pid: Some(pid),
    }
}

/// Sends `signal` to every process of the group `pgid` (0 only checks that one exists). Returns
/// false when the group has no process left; a `pgid` of 0 or 1 (which `kill` would read as
/// "our own group" or "every process") is refused the same way.
pub fn kill_group(pgid: u32, signal: i32) -> bool {
    let pgid = match i32::try_from(pgid) {
        Ok(pgid) if pgid > 1 => pgid,
        _ => return false,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let result = unsafe { libc::kill(-pgid, signal) };
    result == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The process groups of the running processes of this user started with `name=value` in their
/// environment (read from `/proc/PID/environ`; none where there is no `/proc`). This process is
/// never among them.
pub fn groups_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}").into_bytes();
    groups_with_env_entry(|entry| (entry == wanted).then_some(()))
        .into_iter()
        .map(|(group, ())| group)
        .collect()
}

/// The process groups of the running processes of this user whose `name` in their environment
/// starts with `prefix`, each with that value (one per group and value).
pub fn groups_with_env_prefix(name: &str, prefix: &str) -> Vec<(u32, String)> {
    let wanted = format!("{name}={prefix}").into_bytes();
    let skip = name.len() + 1;
    groups_with_env_entry(|entry| {
        entry
            .starts_with(&wanted)
            .then(|| String::from_utf8_lossy(&entry[skip..]).into_owned())
    })
}

fn groups_with_env_entry<T: Ord>(wanted: impl Fn(&[u8]) -> Option<T>) -> Vec<(u32, T)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut groups: Vec<(u32, T)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own {
                return None;
            }
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let found = environ.split(|&b| b == 0).find_map(&wanted)?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp = fields.nth(1)?.parse().ok()?;
            (!matches!(state, "Z" | "X")).then_some((pgrp, found))
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Whether any process of group `pgid` is still running. A zombie does not count: where init
/// does not reap orphans (some containers), a dead member would otherwise keep the group
/// looking alive until `kill_grace` runs out. Reads `/proc` where there is one; elsewhere a
/// zombie counts.
fn group_is_running(pgid: u32) -> bool {
    if !kill_group(pgid, 0) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|stat| stat_is_running_member(&stat, pgid))
    })
}

/// Reads `/proc/PID/stat`: `pid (comm) state ppid pgrp ...`; `comm` may hold spaces and parens,
/// so the fields are counted after its last `)`.
fn stat_is_running_member(stat: &str, pgid: u32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|field| field.parse::<u32>().ok());
    pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
}

/// An ending in words, for log lines: "exited with code 3", "killed by signal 9 (SIGKILL)".
pub fn describe(ending: &Ending) -> String {
    match ending {
        Ending::Exited(code) => format!("exited with code {code}"),
        Ending::Signalled(signal) => match signal_name(*signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        },
        Ending::TimedOut(after) => format!("timed out after {after:?}"),
        Ending::Cancelled => "cancelled".to_owned(),
        Ending::SpawnFailed(message) | Ending::WaitFailed(message) => message.clone(),
    }
}

/// A started child and what [`run`] keeps of it.
struct Started {
    child: Child,
    pid: u32,
    /// The read end of the pipe that is the child's stdout and stderr.
    pipe: pipe::Receiver,
    /// `$UPDRAFT_OUTPUT`, which the child may create.
    output_file: PathBuf,
}

/// Starts the child, or says why it could not be started.
fn start(spawn: &Spawn) -> Result<Started, String> {
    let (output_file, exit_file) = match &spawn.files {
        Files::Scratch(folder) => (
            folder
                .new_path()
                .map_err(|error| format!("cannot create a folder for the outputs: {error}"))?,
            None,
        ),
        Files::Try(files) => (files.output.clone(), Some(files.exit.clone())),
    };
    let pipe_error = |error: io::Error| format!("cannot create a pipe for the output: {error}");
    let (reader, writer) = io::pipe().map_err(pipe_error)?;
    let stderr = writer.try_clone().map_err(pipe_error)?;
    let pipe = pipe::Receiver::from_owned_fd(reader.into()).map_err(pipe_error)?;

    // By path: the task's own `PATH` (from `env`) must not decide which shell runs it. The
    // trap goes on the command's first line, so that the line numbers of its errors stay.
    let script;
    let argv: Vec<&str> = match (&spawn.command, &exit_file) {
        (Command::Run(text), None) => vec!["/bin/sh", "-c", text],
        (Command::Exec(argv), None) => argv.iter().map(String::as_str).collect(),
        (Command::Run(text), Some(_)) => {
            script = format!("{RECORD_EXIT}; {text}");
            vec!["/bin/sh", "-c", &script]
        }
        (Command::Exec(argv), Some(_)) => {
            script = format!("{RECORD_EXIT}; \"$@\"");
            ["/bin/sh", "-c", &script, "sh"]
                .into_iter()
                .chain(argv.iter().map(String::as_str))
                .collect()
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err("cannot start an empty command".to_owned());
    };
    // The command (with the parent's copies of the pipe's write end) is dropped at the end of
    // this statement, so the pipe ends when the child's side of it closes.
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&spawn.working_dir)
        .env_clear()
        .env("PATH", worker_env::DEFAULT_PATH);
    for name in worker_env::inherited(spawn.inherit_env.iter().map(String::as_str)) {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .envs(spawn.env.iter().map(|(name, value)| (name, value)))
        .env("UPDRAFT_OUTPUT", &output_file);
    if let Some(exit_file) = &exit_file {
        command.env("UPDRAFT_TRY_EXIT", exit_file);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|error| spawn_error(program, &spawn.working_dir, error))?;
    let pid = child
        .id()
        .ok_or_else(|| format!("cannot start {program:?}: it has no pid"))?;
    Ok(Started {
        child,
        pid,
        pipe,
        output_file,
    })
}

/// Why a spawn failed, in words: `spawn` says "No such file or directory" both for a missing
/// program and for a missing working directory, so the directory is looked at to tell them apart.
fn spawn_error(program: &str, working_dir: &Path, error: io::Error) -> String {
    match std::fs::metadata(working_dir) {
        Err(dir_error) => format!(
            "cannot start {program:?}: working directory {}: {dir_error}",
            working_dir.display()
        ),
        Ok(metadata) if !metadata.is_dir() => format!(
            "cannot start {program:?}: working directory {} is not a directory",
            working_dir.display()
        ),
        Ok(_) => format!("cannot start {program:?}: {error}"),
    }
}

/// Waits for the main process to end, the timeout or the cancel, whichever comes first, then
/// stops whatever is left of the group.
async fn supervise(
    child: &mut Child,
    pgid: u32,
    spawn: &Spawn,
    cancel: impl Future<Output = ()>,
    log: &mpsc::Sender<Vec<u8>>,
) -> Ending {
    let timeout = spawn.timeout;
    let deadline = async move {
        match timeout {
            Some(after) => {
                sleep(after).await;
                after
            }
            None => pending().await,
        }
    };
    let ending = tokio::select! {
        // A process that ended is not reported as timed out or cancelled.
        biased;
        status = child.wait() => match status {
            Ok(status) => ending_of(status),
            Err(error) => Ending::WaitFailed(format!("cannot wait for the process: {error}")),
        },
        after = deadline => Ending::TimedOut(after),
        () = cancel => Ending::Cancelled,
    };
    let reason = match &ending {
        Ending::Exited(_) | Ending::Signalled(_) => {
            "the command ended but left processes running".to_owned()
        }
        ending => describe(ending),
    };
    stop_group(child, pgid, spawn.kill_grace, &reason, log).await;
    ending
}

/// Ends every process of the group: SIGTERM, then SIGKILL when any is left after `grace`. The
/// main process is reaped on the way, as its zombie would count as a process of the group.
async fn stop_group(
    child: &mut Child,
    pgid: u32,
    grace: Duration,
    reason: &str,
    log: &mpsc::Sender<Vec<u8>>,
) {
    if !kill_group(pgid, libc::SIGTERM) {
        return;
    }
    note(
        log,
        &format!("{reason}; sending SIGTERM to its process group"),
    )
    .await;
    let deadline = Instant::now() + grace;
    let _ = timeout_at(deadline, child.wait()).await;
    while group_is_running(pgid) {
        if Instant::now() >= deadline {
            note(
                log,
                &format!("processes still running {grace:?} after SIGTERM; sending SIGKILL"),
            )
            .await;
            kill_group(pgid, libc::SIGKILL);
            return;
        }
        sleep_until(deadline.min(Instant::now() + GROUP_POLL_INTERVAL)).await;
    }
}

/// Copies the pipe into `log` until every writer closed it, or, once `group_gone` fired, until it
/// stays quiet for [`DRAIN_IDLE`] or [`DRAIN_LIMIT`] more bytes were read.
async fn pump(
    mut pipe: pipe::Receiver,
    log: &mpsc::Sender<Vec<u8>>,
    mut group_gone: oneshot::Receiver<()>,
) {
    // Each read fills a chunk of its own, sent as it is. The first is small, as most tries
    // write little; a read that fills its chunk doubles the next, up to CHUNK_SIZE.
    let mut capacity = FIRST_CHUNK_SIZE;
    // Bytes read since the group is gone; `None` while it runs.
    let mut drained: Option<usize> = None;
    loop {
        let draining = drained.is_some();
        let quiet = async move {
            if draining {
                sleep(DRAIN_IDLE).await
            } else {
                pending().await
            }
        };
        let mut chunk = Vec::with_capacity(capacity);
        let read = tokio::select! {
            read = pipe.read_buf(&mut chunk) => read,
            _ = &mut group_gone, if !draining => {
                drained = Some(0);
                continue;
            }
            () = quiet => return,
        };
        match read {
            Ok(0) => return,
            Ok(n) => {
                if n == capacity {
                    capacity = (capacity * 2).min(CHUNK_SIZE);
                }
                // An error means the receiver is gone: the chunk is dropped, reading goes on.
                let _ = log.send(chunk).await;
                if let Some(drained) = &mut drained {
                    *drained += n;
                    if *drained >= DRAIN_LIMIT {
                        return;
                    }
                }
            }
            Err(error) => {
                note(log, &format!("cannot read the process's output: {error}")).await;
                return;
            }
        }
    }
}

/// The outputs the process wrote to `$UPDRAFT_OUTPUT` (none when it wrote no file), whose file
/// is then removed when `remove` says so; bad lines are warnings in the log.
async fn read_outputs(
    path: &Path,
    remove: bool,
    log: &mpsc::Sender<Vec<u8>>,
) -> Vec<(String, String)> {
    // Most processes write none: a look at the folder, on this thread, tells.
    if matches!(std::fs::exists(path), Ok(false)) {
        return Vec::new();
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            note(log, &format!("cannot read $UPDRAFT_OUTPUT: {error}")).await;
            return Vec::new();
        }
    };
    if remove && let Err(error) = tokio::fs::remove_file(path).await {
        note(log, &format!("cannot remove $UPDRAFT_OUTPUT: {error}")).await;
    }
    let (outputs, warnings) = parse_outputs(&String::from_utf8_lossy(&bytes));
    for warning in warnings {
        note(log, &warning).await;
    }
    outputs
}

/// `name=value` lines into outputs, and a warning for each line that is not one.
fn parse_outputs(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut places: HashMap<&str, usize> = HashMap::new();
    let mut warnings = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            warnings.push(format!(
                "ignored output line {number}: expected name=value, got {line:?}"
            ));
            continue;
        };
        if !is_output_name(name) {
            warnings.push(format!(
                "ignored output line {number}: {name:?} is not a valid output name"
            ));
            continue;
        }
        if value.contains('\0') {
            warnings.push(format!(
                "ignored output line {number}: the value of {name:?} holds a NUL byte, which \
                 the database cannot store"
            ));
            continue;
        }
        match places.get(name) {
            Some(&place) => outputs[place].1 = value.to_owned(),
            None => {
                places.insert(name, outputs.len());
                outputs.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    (outputs, warnings)
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the names templates can read as `outputs.task.name`.
fn is_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn ending_of(status: ExitStatus) -> Ending {
    match status.code() {
        Some(code) => Ending::Exited(code),
        // A process that ended without an exit code was ended by a signal.
        None => Ending::Signalled(status.signal().unwrap_or_default()),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Writes one line of the runner's own into the log.
async fn note(log: &mpsc::Sender<Vec<u8>>, text: &str) {
    let _ = log.send(format!("updraft: {text}\n").into_bytes()).await;
}

/// SIGKILLs the group when [`run`] is dropped before it stopped the group itself.
struct KillOnDrop {
    pgid: u32,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stat_is_running_member;

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        let line = "4242 (my (odd) cmd) S 1 777 777 0 -1 4194560 100 0 0 0";
        assert!(stat_is_running_member(line, 777));
        assert!(!stat_is_running_member(line, 778));
        let zombie = "4243 (sleep) Z 1 777 777 0 -1 4227084 84 0 0 0";
        assert!(!stat_is_running_member(zombie, 777));
        assert!(!stat_is_running_member("garbage", 777));
    }
}
