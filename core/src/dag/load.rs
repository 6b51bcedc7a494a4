//! Reads DAG files from disk: one file, or every `*.yaml`/`*.yml` under folders, in parallel.
//! One broken file never stops the others loading: its problems are collected beside the DAGs.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::decode::{Diagnostic, LoadOptions, decode};
use super::model::Dag;
use super::yaml::Pos;

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
    /// One `path:line:col: message` line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}",
                self.path.display(),
                diagnostic.pos,
                diagnostic.message
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

/// Reads and validates one DAG file.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<LoadedDag, FileError> {
    let source = std::fs::read_to_string(path)
        .map_err(|error| FileError::whole_file(path, format!("cannot read the file: {error}")))?;
    let fileloc = path.to_string_lossy();
    match decode(&fileloc, &source, options) {
        Ok(dag) => Ok(LoadedDag { dag, source }),
        Err(diagnostics) => Err(FileError {
            path: path.to_owned(),
            diagnostics,
        }),
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
            if let Err(error) = collect_files(path, &mut files) {
                load.errors.push(FileError::whole_file(
                    path,
                    format!("cannot read the folder: {error}"),
                ));
            }
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
/// start with `.`), sorted by path.
pub fn dag_files(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_files(folder, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(folder: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
    Ok(())
}
