//! Reads DAG files from disk: one file, or every `*.yaml`/`*.yml` under folders, in parallel.
//! One broken file never stops the others loading: its problems are collected beside the DAGs.
//!
//! Only regular files are read, at most [`MOST_BYTES`] each: a FIFO would block the reader for
//! good and `/dev/zero` never ends, so such a file is reported, not opened for reading. Under a
//! folder, a symbolic link is followed only to a file or folder inside that folder, and each
//! folder is walked once (a link back up the tree is no loop).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::decode::{Diagnostic, LoadOptions, decode};
use super::model::Dag;
use super::yaml::Pos;
use crate::text::one_line;

/// A DAG and the text it was read from (stored with each DAG version, shown in the UI).
#[derive(Debug, Clone)]
pub struct LoadedDag {
    pub dag: Dag,
    pub source: String,
}

/// Every problem of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for FileError {
    /// One `path:line:col: message` line per problem; the control characters of the path and
    /// the message (which quotes values of the file) are escaped, so each problem is one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.to_string_lossy();
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}",
                one_line(&path),
                diagnostic.pos,
                one_line(&diagnostic.message)
            )?;
        }
        Ok(())
    }
}

impl FileError {
    fn whole_file(path: &Path, message: String) -> FileError {
        FileError {
            path: path.to_owned(),
            diagnostics: vec![Diagnostic {
                pos: Pos { line: 1, col: 1 },
                message,
            }],
        }
    }
}

/// The DAGs and the broken files of a set of paths, each sorted by path.
#[derive(Debug, Default)]
pub struct FolderLoad {
    pub dags: Vec<LoadedDag>,
    pub errors: Vec<FileError>,
}

/// The largest DAG file read, in bytes.
pub const MOST_BYTES: u64 = 8 * 1024 * 1024;

/// Reads and validates one DAG file.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<LoadedDag, FileError> {
    let source = read_source(path).map_err(|message| FileError::whole_file(path, message))?;
    let fileloc = path.to_string_lossy();
    match decode(&fileloc, &source, options) {
        Ok(dag) => Ok(LoadedDag { dag, source }),
        Err(diagnostics) => Err(FileError {
            path: path.to_owned(),
            diagnostics,
        }),
    }
}

/// The text of a regular file of at most [`MOST_BYTES`]. The file is opened without blocking
/// (opening a FIFO for reading would wait for a writer) and checked once open, so that a file
/// swapped for something else after the folder was listed is still refused.
fn read_source(path: &Path) -> Result<String, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| format!("cannot read the file: {error}"))?;
    let metadata = file
        .metadata()
        .map_err(|error| format!("cannot read the file: {error}"))?;
    if !metadata.is_file() {
        return Err(format!(
            "not a regular file ({}): only regular files are read as DAG files",
            kind_of(&metadata.file_type())
        ));
    }
    let too_large =
        || format!("the file is larger than {MOST_BYTES} bytes, the most a DAG file may have");
    if metadata.len() > MOST_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MOST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read the file: {error}"))?;
    if bytes.len() as u64 > MOST_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|error| {
        format!(
            "cannot read the file: not UTF-8 text (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })
}

/// What a file that is not regular is, for messages.
fn kind_of(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a folder"
    } else {
        "not a file"
    }
}

/// Loads every DAG file under `paths` (files, or folders searched recursively; names starting
/// with `.` are skipped). Two files defining the same DAG id: the first by path wins and the
/// other is reported.
pub fn load_paths(paths: &[PathBuf], options: &LoadOptions) -> FolderLoad {
    let mut load = FolderLoad::default();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let (found, errors) = walk(path);
            files.extend(found);
            load.errors.extend(errors);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            load.errors.push(FileError::whole_file(
                path,
                "no such file or folder".to_owned(),
            ));
        }
    }
    files.sort();
    files.dedup();

    let results = load_in_parallel(&files, options);
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (path, result) in files.iter().zip(results) {
        match result {
            Ok(loaded) => match seen.get(loaded.dag.id.as_str()) {
                Some(first) => load.errors.push(FileError::whole_file(
                    path,
                    format!(
                        "dag id \"{}\" is already defined in {}",
                        loaded.dag.id,
                        first.display()
                    ),
                )),
                None => {
                    seen.insert(loaded.dag.id.to_string(), path.clone());
                    load.dags.push(loaded);
                }
            },
            Err(error) => load.errors.push(error),
        }
    }
    load.errors.sort_by(|a, b| a.path.cmp(&b.path));
    load
}

fn load_in_parallel(files: &[PathBuf], options: &LoadOptions) -> Vec<Result<LoadedDag, FileError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads == 1 || files.len() < 16 {
        return files.iter().map(|path| load_file(path, options)).collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|path| load_file(path, options))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("loading a DAG file does not panic"))
            .collect()
    })
}

/// The DAG files under `folder` (`.yaml` and `.yml`, searched recursively, skipping names that
/// start with `.`), sorted by path. Files that will not be read (see [`walk`]) are left out.
pub fn dag_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::read_dir(folder)?;
    let (mut files, _) = walk(folder);
    files.sort();
    Ok(files)
}

/// The DAG files under `folder`, and the problems of the entries it will not read: a link that
/// leads outside the folder (or nowhere), a folder that cannot be listed. A DAG file that is
/// not regular (a FIFO, a device) is listed: reading it reports it without blocking.
fn walk(folder: &Path) -> (Vec<PathBuf>, Vec<FileError>) {
    let mut walk = Walk {
        root: std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_owned()),
        seen: HashSet::new(),
        files: Vec::new(),
        errors: Vec::new(),
    };
    walk.folder(folder);
    (walk.files, walk.errors)
}

struct Walk {
    /// The folder walked, with its links resolved.
    root: PathBuf,
    /// The folders walked so far, with their links resolved.
    seen: HashSet<PathBuf>,
    files: Vec<PathBuf>,
    errors: Vec<FileError>,
}

impl Walk {
    fn folder(&mut self, folder: &Path) {
        if let Ok(real) = std::fs::canonicalize(folder)
            && !self.seen.insert(real)
        {
            return;
        }
        let entries = match std::fs::read_dir(folder) {
            Ok(entries) => entries,
            Err(error) => {
                let message = format!("cannot read the folder: {error}");
                self.errors.push(FileError::whole_file(folder, message));
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    let message = format!("cannot read the folder: {error}");
                    self.errors.push(FileError::whole_file(folder, message));
                    continue;
                }
            };
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with('.'));
            if !hidden {
                self.entry(path, entry.file_type());
            }
        }
    }

    fn entry(&mut self, path: PathBuf, kind: std::io::Result<std::fs::FileType>) {
        let is_dag_file = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let Ok(kind) = kind else {
            return;
        };
        if kind.is_dir() {
            return self.folder(&path);
        }
        if !kind.is_symlink() {
            if is_dag_file {
                self.files.push(path);
            }
            return;
        }
        let target = std::fs::canonicalize(&path);
        let problem = match &target {
            Err(error) => Some(format!("a link that leads nowhere: {error}")),
            Ok(target) if !target.starts_with(&self.root) => Some(format!(
                "a link to {}, outside the DAGs folder {}: not read",
                target.display(),
                self.root.display()
            )),
            Ok(_) => None,
        };
        let target_is_dir = target.is_ok_and(|target| target.is_dir());
        match problem {
            Some(message) if is_dag_file || target_is_dir => {
                self.errors.push(FileError::whole_file(&path, message));
            }
            Some(_) => {}
            None if target_is_dir => self.folder(&path),
            None if is_dag_file => self.files.push(path),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    use super::*;

    const DAG: &str = "version: 1\ntasks:\n  a: {run: \"true\"}\n";

    fn messages(load: &FolderLoad) -> Vec<String> {
        load.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_fifo_a_device_and_a_huge_file_are_reported_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path();
        std::fs::write(dags.join("good.yaml"), DAG).unwrap();
        let fifo =
            std::ffi::CString::new(dags.join("pipe.yaml").into_os_string().into_encoded_bytes())
                .unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        symlink("/dev/zero", dags.join("zero.yaml")).unwrap();
        let huge = std::fs::File::create(dags.join("huge.yaml")).unwrap();
        huge.set_len(MOST_BYTES + 1).unwrap();
        // A reader that blocked on the FIFO would never answer.
        let (sender, answer) = std::sync::mpsc::channel();
        let folder = dags.to_owned();
        std::thread::spawn(move || {
            let _ = sender.send(load_paths(&[folder], &LoadOptions::default()));
        });
        let load = answer
            .recv_timeout(Duration::from_secs(30))
            .expect("loading the folder returns");
        assert_eq!(load.dags.len(), 1, "{:?}", messages(&load));
        let messages = messages(&load);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages[0].contains("huge.yaml:1:1: the file is larger than"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("pipe.yaml:1:1: not a regular file (a FIFO)"),
            "{messages:?}"
        );
        // /dev/zero is outside the folder: the link is not followed.
        assert!(
            messages[2].contains("zero.yaml:1:1: a link to /dev/zero, outside"),
            "{messages:?}"
        );
        // Named on its own, the device is still not read.
        let load = load_paths(&[PathBuf::from("/dev/zero")], &LoadOptions::default());
        assert!(messages_of(&load).contains("not a regular file (a device)"));
    }

    fn messages_of(load: &FolderLoad) -> String {
        messages(load).join("\n")
    }

    #[test]
    fn links_inside_the_folder_are_followed_once_and_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(dags.join("team")).unwrap();
        std::fs::write(dags.join("team/a.yaml"), DAG).unwrap();
        symlink(dags.join("team/a.yaml"), dags.join("b.yml")).unwrap();
        symlink(&dags, dags.join("team/up")).unwrap();
        std::fs::write(dir.path().join("outside.yaml"), DAG).unwrap();
        symlink(dir.path().join("outside.yaml"), dags.join("c.yaml")).unwrap();
        symlink(dags.join("missing.yaml"), dags.join("d.yaml")).unwrap();
        let files = dag_files(&dags).unwrap();
        assert_eq!(files, vec![dags.join("b.yml"), dags.join("team/a.yaml")]);
        let load = load_paths(std::slice::from_ref(&dags), &LoadOptions::default());
        let messages = messages_of(&load);
        assert!(messages.contains("c.yaml:1:1: a link to"), "{messages}");
        assert!(
            messages.contains("d.yaml:1:1: a link that leads nowhere"),
            "{messages}"
        );
        // The link b.yml is a DAG of its own (its id is its file's stem).
        assert_eq!(load.dags.len(), 2, "{messages}");
    }
}
