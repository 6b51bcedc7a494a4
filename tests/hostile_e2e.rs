//! Hostile input end to end: DAG files that would block a reader (a FIFO), never end
//! (`/dev/zero`), or expand without bound (YAML aliases), and values that would forge output
//! lines or reach the terminal as escapes. Each is reported with its place, and the rest goes
//! on: the other DAGs run, commands return, the process stops when asked. And two processes
//! that would share one identity (a worker name, a standalone's home): the second is refused,
//! naming the first, and each try runs once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::world::{World, block_on};
use common::{Running, updraft};
use updraft_metadata::Store;

const GOOD: &str = "version: 1\nid: good\ntasks:\n  only: {run: \"true\"}\n";

/// Eight levels of ten aliases: 10^8 nodes if expanded, in a few hundred bytes.
fn alias_bomb() -> String {
    let mut text =
        "version: 1\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned();
    for level in 1..8 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("x{level}: &a{level} [{items}]\n"));
    }
    text.push_str("tasks:\n  only: {run: \"true\"}\n");
    text
}

/// A folder with one good DAG and every hostile file.
fn hostile_folder(dags: &Path) {
    std::fs::write(dags.join("good.yaml"), GOOD).unwrap();
    let fifo = std::ffi::CString::new(dags.join("pipe.yaml").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dags.join("zero.yaml")).unwrap();
    std::fs::write(dags.join("bomb.yaml"), alias_bomb()).unwrap();
    std::fs::write(
        dags.join("forged.yaml"),
        "version: 1\ntasks:\n  only: {run: \"true\", \"x\\nforged.yaml:9:9: all is well\\u001b[2J\": 1}\n",
    )
    .unwrap();
}

/// Runs `command`, killing it after 60 s: returns (exit code, stdout, stderr), or panics when
/// it hung.
fn run_bounded(mut command: Command) -> (i32, String, String) {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output = match answer.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the command hung: {command:?}");
        }
    };
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn validate_reports_each_hostile_file_on_one_line_without_reading_it() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    hostile_folder(dags.path());
    let mut command = updraft(home.path());
    command.args(["dags", "validate"]).arg(dags.path());
    let (code, stdout, stderr) = run_bounded(command);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("4 problem(s) in 4 file(s); 1 DAG file(s) valid"),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem:\n{stdout}");
    assert!(
        lines[0].contains("bomb.yaml:7:") && lines[0].contains("*a4"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("forged.yaml:3:") && lines[1].contains("\\nforged.yaml:9:9"),
        "{stdout}"
    );
    assert!(lines[1].contains("\\u{1b}[2J"), "{stdout}");
    assert!(
        lines[2].contains("pipe.yaml:1:1: not a regular file (a FIFO)"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("zero.yaml:1:1: a link to /dev/zero, outside"),
        "{stdout}"
    );
    assert!(!stdout.contains('\u{1b}'), "no escape reaches the terminal");
}

#[test]
fn a_standalone_with_hostile_files_runs_the_other_dags_and_stops_when_asked() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    hostile_folder(dags.path());
    let mut standalone = Running::standalone(home.path(), dags.path(), &[], &[]);
    let mut trigger = updraft(home.path());
    trigger
        .arg("--dags-folder")
        .arg(dags.path())
        .args(["dags", "trigger", "good", "--wait"]);
    let (code, stdout, stderr) = run_bounded(trigger);
    assert_eq!(code, 0, "the good DAG's run succeeds: {stdout}{stderr}");
    let mut list = updraft(home.path());
    list.arg("--dags-folder")
        .arg(dags.path())
        .args(["dags", "list", "--json"]);
    let (code, stdout, stderr) = run_bounded(list);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"good\""), "{stdout}");
    let database = format!("sqlite:{}", home.path().join("updraft.db").display());
    let errors = block_on(async {
        let store = Store::open(&database).await.unwrap();
        let errors = store.list_import_errors().await.unwrap();
        store.close().await;
        errors
    });
    let files: Vec<&str> = errors
        .iter()
        .map(|error| error.filename.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        files,
        ["bomb.yaml", "forged.yaml", "pipe.yaml", "zero.yaml"],
        "{errors:?}"
    );
    let code = standalone.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "SIGTERM stops it: {}", standalone.stderr());
}

#[test]
fn a_second_standalone_on_the_same_home_is_refused_and_names_the_first() {
    let world = World::new();
    world.dag("good", GOOD);
    let first = world.standalone("first", &[]);
    let (code, stdout, stderr) = run_bounded(world.command(&["standalone", "--port", "0"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let pid = first.child.id();
    assert!(
        stderr.contains(&format!(
            "an updraft standalone (process {pid}) already runs on the home {}",
            world.home.display()
        )),
        "{stderr}"
    );
    // The first one goes on: a run still succeeds.
    let run_id = world.trigger("good");
    let runs = world.finished_runs("good", 1, &[&first]);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["state"], "success");
}

#[test]
fn workers_on_one_host_take_names_of_their_own_and_run_each_try_once() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let mut yaml = String::from("version: 1\nenv:\n  WORK: \"@WORK@\"\ntasks:\n");
    for i in 0..20 {
        yaml.push_str(&format!("  t{i:02}: {{run: sh \"$WORK/task.sh\" 0.2}}\n"));
    }
    world.dag("wide", &yaml);
    let scheduler = world.start("scheduler", &["scheduler"], 0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let names = [format!("{}:1", host.trim()), format!("{}:2", host.trim())];
    let first = world.start("w1", &["worker", "--concurrency", "4"], 0);
    world.workers_running(&[names[0].as_str()]);
    let second = world.start("w2", &["worker", "--concurrency", "4"], 0);
    world.workers_running(&[names[0].as_str(), names[1].as_str()]);
    // A name a live worker holds is refused, on its own host too.
    let (code, stdout, stderr) = run_bounded(world.command(&["worker", "--name", &names[0]]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the worker name '{}' is held by process {} on host {}",
            names[0],
            first.child.id(),
            host.trim()
        )),
        "{stderr}"
    );
    let run_id = world.trigger("wide");
    let runs = world.finished_runs("wide", 1, &[&scheduler, &first, &second]);
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let records = world.records();
    assert_eq!(records.len(), 20);
    for ((_, task), record) in &records {
        assert_eq!(record.tries.len(), 1, "{task} ran once: {}", record.text);
    }
    let instances = world.instances("wide", &run_id);
    let workers: BTreeSet<String> = instances
        .values()
        .flat_map(|(_, tries)| tries.iter().map(|try_| try_.worker_id.clone().unwrap()))
        .collect();
    assert_eq!(
        workers,
        names.into_iter().collect(),
        "both workers ran tries"
    );
}
