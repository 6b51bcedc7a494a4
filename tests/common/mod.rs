//! Helpers for end-to-end tests that drive the real `updraft` binary.

#![allow(dead_code)] // Each test file uses its own subset.

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
