//! `updraft dags validate` on the example DAGs and on the corpus of broken files.
//!
//! Each `tests/dags/broken/NAME.yaml` has its exact expected output in `NAME.expected`: one
//! `path:line:col: message` line per problem. After a deliberate change of a message, rewrite
//! the expected files with `UPDRAFT_BLESS=1 cargo test --test dags_validate` and review the diff.

mod common;

use std::path::Path;

use common::{repo, run, updraft};

#[test]
fn example_dags_are_valid() {
    let home = tempfile::tempdir().unwrap();
    let mut command = updraft(home.path());
    command.args(["dags", "validate", "dags"]);
    let (code, stdout, stderr) = run(command);
    assert_eq!(stdout, "", "no problems are printed");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DAG file(s) valid"), "{stderr}");
}

#[test]
fn every_broken_file_gives_its_expected_messages() {
    let bless = std::env::var_os("UPDRAFT_BLESS").is_some();
    let folder = repo().join("tests/dags/broken");
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus holds at least 25 files");
    let home = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for file in files {
        let relative = file.strip_prefix(repo()).unwrap();
        let mut command = updraft(home.path());
        command.args(["dags", "validate"]).arg(relative);
        let (code, stdout, stderr) = run(command);
        let expected_path = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &stdout).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if code != 1 || stdout != expected || stdout.is_empty() {
            failures.push(format!(
                "{}: exit {code}\n--- expected\n{expected}--- got\n{stdout}--- stderr\n{stderr}",
                relative.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_broken_file_does_not_stop_the_others() {
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("dags/fanout_reports.yaml"),
        folder.path().join("fanout_reports.yaml"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("tests/dags/broken/08_cycle.yaml"),
        folder.path().join("broken.yaml"),
    )
    .unwrap();

    let mut command = updraft(home.path());
    command.args(["dags", "validate"]).arg(folder.path());
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("broken.yaml:2:3: cycle: a -> b -> c -> a"),
        "{stdout}"
    );
    assert!(stderr.contains("1 DAG file(s) valid"), "{stderr}");

    let mut command = updraft(home.path());
    command
        .args(["dags", "list", "--dags-folder"])
        .arg(folder.path());
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("fanout_reports"), "{stdout}");
    assert!(stderr.contains("1 DAG file(s) have errors"), "{stderr}");
}

#[test]
fn a_missing_path_is_reported() {
    let home = tempfile::tempdir().unwrap();
    let mut command = updraft(home.path());
    command.args(["dags", "validate", "no/such/dir"]);
    let (code, stdout, _) = run(command);
    assert_eq!(code, 1);
    assert_eq!(stdout, "no/such/dir:1:1: no such file or folder\n");
    assert!(!Path::new("no/such/dir").exists());
}
