//! `process::run` against real processes: exit codes, output capture, outputs, timeouts,
//! cancels, process groups and spawn failures.

use std::future::{Future, pending};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::mpsc;
use updraft_core::dag::Command;
use updraft_core::ids::{TaskInstanceId, TryKey};
use updraft_process::{self as process, Ending, Files, Finished, OutputFolder, Spawn};

/// What a test looks at after a run.
struct Ran {
    finished: Finished,
    log: String,
    /// Every chunk's length, in order.
    chunks: Vec<usize>,
    elapsed: Duration,
    /// What `on_start` was given.
    started_pid: Option<u32>,
}

fn sh(text: &str) -> Command {
    Command::Run(text.to_owned())
}

fn spawn_in(dir: &Path, command: Command) -> Spawn {
    Spawn {
        command,
        env: Vec::new(),
        inherit_env: Vec::new(),
        working_dir: dir.to_path_buf(),
        timeout: None,
        kill_grace: Duration::from_millis(300),
        files: Files::Scratch(Arc::default()),
    }
}

async fn run_until(spawn: Spawn, cancel: impl Future<Output = ()>) -> Ran {
    let (log, mut chunks) = mpsc::channel::<Vec<u8>>(4);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            all.push(chunk);
        }
        all
    });
    let mut started_pid = None;
    let start = Instant::now();
    let finished = process::run(spawn, log, cancel, |pid| started_pid = Some(pid)).await;
    let elapsed = start.elapsed();
    let all = collector.await.unwrap();
    Ran {
        finished,
        log: String::from_utf8_lossy(&all.concat()).into_owned(),
        chunks: all.iter().map(Vec::len).collect(),
        elapsed,
        started_pid,
    }
}

async fn run(spawn: Spawn) -> Ran {
    run_until(spawn, pending()).await
}

/// The pids a test command wrote, one per line, to `file` in `dir`.
fn pids(dir: &Path, file: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .map(|line| line.trim().parse().unwrap())
        .collect()
}

/// Whether `pid` is gone within 2 s: no such process, or a zombie left for init to reap (the
/// init of some containers never does).
async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let state = stat.as_deref().map(|stat| {
            let after_name = &stat[stat.rfind(')').unwrap() + 1..];
            after_name.split_whitespace().next().unwrap().to_owned()
        });
        match state {
            Err(_) => return true,
            Ok(state) if state == "Z" => return true,
            Ok(_) if Instant::now() >= deadline => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test]
async fn exit_code_zero_and_pid_reported() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(dir.path(), sh("echo $$ > pid"))).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    let pid = pids(dir.path(), "pid")[0];
    assert_eq!(ran.finished.pid, Some(pid));
    assert_eq!(ran.started_pid, Some(pid));
    assert_eq!(
        process::describe(&ran.finished.ending),
        "exited with code 0"
    );
}

#[tokio::test]
async fn non_zero_exit_code() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(dir.path(), sh("exit 3"))).await;
    assert_eq!(ran.finished.ending, Ending::Exited(3));
    assert_eq!(
        process::describe(&ran.finished.ending),
        "exited with code 3"
    );
}

#[tokio::test]
async fn killed_by_a_signal() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(dir.path(), sh("kill -9 $$"))).await;
    assert_eq!(ran.finished.ending, Ending::Signalled(9));
    assert_eq!(
        process::describe(&ran.finished.ending),
        "killed by signal 9 (SIGKILL)"
    );
}

#[tokio::test]
async fn exec_keeps_arguments_as_they_are_without_a_shell() {
    let dir = TempDir::new().unwrap();
    let argv = ["printf", "%s|", "a  b", "$HOME", "*", "'q'"];
    let command = Command::Exec(argv.iter().map(|arg| arg.to_string()).collect());
    let ran = run(spawn_in(dir.path(), command)).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    assert_eq!(ran.log, "a  b|$HOME|*|'q'|");
}

#[tokio::test]
async fn env_and_working_dir_reach_the_child() {
    let dir = TempDir::new().unwrap();
    let mut spawn = spawn_in(
        dir.path(),
        sh(r#"printf '%s\n' "$GREETING"; pwd -P; printf '%s\n' "$PATH""#),
    );
    spawn.env = vec![("GREETING".to_owned(), "hello  world".to_owned())];
    let ran = run(spawn).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    let expected = format!(
        "hello  world\n{}\n{}\n",
        dir.path().canonicalize().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    assert_eq!(ran.log, expected);
}

#[tokio::test]
async fn the_shell_does_not_depend_on_the_tasks_path() {
    let dir = TempDir::new().unwrap();
    let mut spawn = spawn_in(dir.path(), sh("echo \"$PATH\""));
    spawn.env = vec![("PATH".to_owned(), "/nonexistent".to_owned())];
    let ran = run(spawn).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    assert_eq!(ran.log, "/nonexistent\n");
}

#[tokio::test]
async fn stdout_and_stderr_are_merged_in_order() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(
        dir.path(),
        sh("echo out; echo err >&2; echo out again"),
    ))
    .await;
    assert_eq!(ran.log, "out\nerr\nout again\n");
}

#[tokio::test]
async fn large_output_does_not_deadlock() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(
        dir.path(),
        sh("head -c 1000000 /dev/zero; echo end >&2"),
    ))
    .await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    assert_eq!(ran.log.len(), 1_000_004);
    assert!(ran.log.ends_with("end\n"));
    assert!(ran.chunks.iter().all(|&len| len <= 64 * 1024));
}

#[tokio::test]
async fn output_is_drained_when_the_log_receiver_is_gone() {
    let dir = TempDir::new().unwrap();
    let (log, chunks) = mpsc::channel(1);
    drop(chunks);
    let spawn = spawn_in(dir.path(), sh("head -c 1000000 /dev/zero"));
    let finished = process::run(spawn, log, pending(), |_| {}).await;
    assert_eq!(finished.ending, Ending::Exited(0));
}

#[tokio::test]
async fn outputs_are_parsed_with_bad_lines_warned_and_later_duplicates_winning() {
    let dir = TempDir::new().unwrap();
    let script = r#"printf 'rows=1\nsql=a = b\n\n  \nno equals sign\n1st=x\n=empty\nrows=2\r\nblank=\nnul=a\0b\n_ok=  spaced  ' > "$UPDRAFT_OUTPUT""#;
    let ran = run(spawn_in(dir.path(), sh(script))).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    let outputs: Vec<(&str, &str)> = ran
        .finished
        .outputs
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("rows", "2"),
            ("sql", "a = b"),
            ("blank", ""),
            ("_ok", "  spaced  ")
        ]
    );
    assert_eq!(
        ran.log,
        "updraft: ignored output line 5: expected name=value, got \"no equals sign\"\n\
         updraft: ignored output line 6: \"1st\" is not a valid output name\n\
         updraft: ignored output line 7: \"\" is not a valid output name\n\
         updraft: ignored output line 10: the value of \"nul\" holds a NUL byte, which the \
         database cannot store\n"
    );
}

#[tokio::test]
async fn the_output_file_exists_only_if_written_and_its_folder_goes_with_its_owner() {
    let dir = TempDir::new().unwrap();
    let folder = Arc::new(OutputFolder::default());
    let with_folder = |command: &str| Spawn {
        files: Files::Scratch(folder.clone()),
        ..spawn_in(dir.path(), sh(command))
    };
    let silent = run(with_folder(r#"printf '%s' "$UPDRAFT_OUTPUT""#)).await;
    let writer = run(with_folder(
        r#"printf '%s' "$UPDRAFT_OUTPUT"; echo rows=3 >> "$UPDRAFT_OUTPUT""#,
    ))
    .await;
    assert!(silent.finished.outputs.is_empty());
    assert_eq!(
        writer.finished.outputs,
        [("rows".to_owned(), "3".to_owned())]
    );
    let (silent_path, writer_path) = (Path::new(&silent.log), Path::new(&writer.log));
    assert_ne!(
        silent_path, writer_path,
        "each process gets a path of its own"
    );
    assert!(
        !silent_path.exists(),
        "no file for a process that wrote none"
    );
    assert!(!writer_path.exists(), "the file is removed once read");
    let parent = writer_path.parent().unwrap().to_path_buf();
    assert!(parent.is_dir());
    drop(folder);
    assert!(!parent.exists(), "the folder goes with its last owner");
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let dir = TempDir::new().unwrap();
    let script = "sh -c 'sleep 300 & echo $! >> pids; wait' & \
                  sleep 300 & echo $! >> pids; echo $$ >> pids; wait";
    let mut spawn = spawn_in(dir.path(), sh(script));
    spawn.timeout = Some(Duration::from_millis(500));
    let ran = run(spawn).await;
    assert_eq!(
        ran.finished.ending,
        Ending::TimedOut(Duration::from_millis(500))
    );
    assert_eq!(
        process::describe(&ran.finished.ending),
        "timed out after 500ms"
    );
    assert!(
        ran.elapsed >= Duration::from_millis(500),
        "{:?}",
        ran.elapsed
    );
    assert!(ran.elapsed < Duration::from_secs(3), "{:?}", ran.elapsed);
    assert!(ran.log.contains("sending SIGTERM"), "{}", ran.log);
    let pids = pids(dir.path(), "pids");
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(gone(pid).await, "process {pid} survived");
    }
}

#[tokio::test]
async fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
    let dir = TempDir::new().unwrap();
    let script = "trap '' TERM; sleep 300 & echo $! >> pids; echo $$ >> pids; wait";
    let mut spawn = spawn_in(dir.path(), sh(script));
    spawn.timeout = Some(Duration::from_millis(300));
    spawn.kill_grace = Duration::from_millis(400);
    let ran = run(spawn).await;
    assert_eq!(
        ran.finished.ending,
        Ending::TimedOut(Duration::from_millis(300))
    );
    assert!(
        ran.elapsed >= Duration::from_millis(700),
        "{:?}",
        ran.elapsed
    );
    assert!(ran.elapsed < Duration::from_secs(3), "{:?}", ran.elapsed);
    assert!(ran.log.contains("sending SIGKILL"), "{}", ran.log);
    for pid in pids(dir.path(), "pids") {
        assert!(gone(pid).await, "process {pid} survived");
    }
}

#[tokio::test]
async fn cancel_stops_the_group() {
    let dir = TempDir::new().unwrap();
    let script = "sleep 300 & echo $! >> pids; echo $$ >> pids; wait";
    let cancel = tokio::time::sleep(Duration::from_millis(300));
    let ran = run_until(spawn_in(dir.path(), sh(script)), cancel).await;
    assert_eq!(ran.finished.ending, Ending::Cancelled);
    assert!(ran.elapsed < Duration::from_secs(3), "{:?}", ran.elapsed);
    for pid in pids(dir.path(), "pids") {
        assert!(gone(pid).await, "process {pid} survived");
    }
}

#[tokio::test]
async fn processes_left_running_after_a_normal_exit_are_stopped() {
    let dir = TempDir::new().unwrap();
    let script = "sleep 300 & echo $! > pids; echo done";
    let ran = run(spawn_in(dir.path(), sh(script))).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    // The background sleep holds the pipe open: without the stop this would take 300 s.
    assert!(ran.elapsed < Duration::from_secs(3), "{:?}", ran.elapsed);
    assert!(ran.log.starts_with("done\n"), "{}", ran.log);
    assert!(ran.log.contains("left processes running"), "{}", ran.log);
    assert!(gone(pids(dir.path(), "pids")[0]).await);
}

#[tokio::test]
async fn a_stopped_leftover_ends_the_try_without_waiting_out_the_grace() {
    let dir = TempDir::new().unwrap();
    let mut spawn = spawn_in(dir.path(), sh("sleep 300 & echo $! > pids; echo done"));
    spawn.kill_grace = Duration::from_secs(30);
    let ran = run(spawn).await;
    assert_eq!(ran.finished.ending, Ending::Exited(0));
    // The sleep dies at SIGTERM; even where nobody reaps its zombie at once, the group
    // counts as gone and the try does not wait the 30 s grace.
    assert!(ran.elapsed < Duration::from_secs(5), "{:?}", ran.elapsed);
    assert!(gone(pids(dir.path(), "pids")[0]).await);
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = TempDir::new().unwrap();
    let script = "sleep 300 & echo $! >> pids; echo $$ >> pids; wait";
    let (log, _chunks) = mpsc::channel(16);
    let running = process::run(spawn_in(dir.path(), sh(script)), log, pending(), |_| {});
    let dropped = tokio::time::timeout(Duration::from_millis(300), running).await;
    assert!(dropped.is_err(), "the run ended by itself");
    for pid in pids(dir.path(), "pids") {
        assert!(gone(pid).await, "process {pid} survived");
    }
}

#[tokio::test]
async fn a_missing_working_dir_is_a_spawn_failure() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("missing");
    let ran = run(spawn_in(&missing, sh("true"))).await;
    let message = format!(
        "cannot start \"/bin/sh\": working directory {}: No such file or directory (os error 2)",
        missing.display()
    );
    assert_eq!(ran.finished.ending, Ending::SpawnFailed(message.clone()));
    assert_eq!(ran.finished.pid, None);
    assert_eq!(ran.started_pid, None);
    assert_eq!(ran.log, format!("updraft: {message}\n"));
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure() {
    let dir = TempDir::new().unwrap();
    let ran = run(spawn_in(
        dir.path(),
        Command::Exec(vec!["nosuchprog".to_owned()]),
    ))
    .await;
    let message = "cannot start \"nosuchprog\": No such file or directory (os error 2)";
    assert_eq!(ran.finished.ending, Ending::SpawnFailed(message.to_owned()));
    assert_eq!(ran.log, format!("updraft: {message}\n"));
    assert_eq!(process::describe(&ran.finished.ending), message);
}

#[tokio::test]
async fn groups_are_found_by_the_environment_their_processes_started_with() {
    let dir = TempDir::new().unwrap();
    let mark = format!("mark-{}", std::process::id());
    let mut spawn = spawn_in(dir.path(), sh("sleep 300 & echo $! >> pids; wait"));
    spawn
        .env
        .push(("UPDRAFT_TEST_MARK".to_owned(), mark.clone()));
    let (log, _chunks) = mpsc::channel(16);
    let (started, pid) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(process::run(spawn, log, pending(), move |pid| {
        let _ = started.send(pid);
    }));
    let pid = pid.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dir.path().join("pids").exists() {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The shell and its `sleep` carry the mark: one group, the shell's.
    assert_eq!(process::groups_with_env("UPDRAFT_TEST_MARK", &mark), [pid]);
    assert!(process::groups_with_env("UPDRAFT_TEST_MARK", "other").is_empty());
    assert!(process::kill_group(pid, libc::SIGKILL));
    let _ = running.await;
    for pid in pids(dir.path(), "pids") {
        assert!(gone(pid).await, "process {pid} survived");
    }
    assert!(process::groups_with_env("UPDRAFT_TEST_MARK", &mark).is_empty());
}

#[tokio::test]
async fn a_try_records_its_exit_and_keeps_its_outputs_for_its_worker_to_adopt() {
    let dir = TempDir::new().unwrap();
    let folder = process::TryFolder::of_worker("test", &format!("test:{}", std::process::id()));
    let key = |task_instance, try_number| TryKey {
        task_instance: TaskInstanceId(task_instance),
        try_number,
    };
    let cases = [
        (sh("echo rows=3 >> \"$UPDRAFT_OUTPUT\"; true"), 0),
        (sh("exit 7"), 7),
        (sh("false; echo after"), 0),
        (sh("sh -c 'exit 4'"), 4),
        (
            Command::Exec(vec!["sh".into(), "-c".into(), "exit 5".into()]),
            5,
        ),
    ];
    for (number, (command, code)) in cases.into_iter().enumerate() {
        let files = folder.files(key(42, number as i32 + 1)).unwrap();
        let ran = run(Spawn {
            files: Files::Try(files.clone()),
            ..spawn_in(dir.path(), command.clone())
        })
        .await;
        assert_eq!(ran.finished.ending, Ending::Exited(code), "{command:?}");
        assert_eq!(files.recorded_exit(), Some(code), "{command:?}");
        if number == 0 {
            assert_eq!(ran.finished.outputs, [("rows".to_owned(), "3".to_owned())]);
            assert_eq!(files.outputs().0, ran.finished.outputs, "kept for adoption");
        }
        files.remove();
        assert_eq!(files.recorded_exit(), None);
    }
    // The trap shares the command's first line: an error names the line the user wrote.
    let files = folder.files(key(43, 1)).unwrap();
    let ran = run(Spawn {
        files: Files::Try(files.clone()),
        ..spawn_in(dir.path(), sh("true\nno_such_command_here"))
    })
    .await;
    assert!(
        ran.log.contains("2: no_such_command_here: not found"),
        "{}",
        ran.log
    );
    assert_eq!(files.recorded_exit(), Some(127));
    files.remove();
    // A try killed by a signal records nothing: it did not finish.
    let files = folder.files(key(44, 1)).unwrap();
    let ran = run(Spawn {
        files: Files::Try(files.clone()),
        timeout: Some(Duration::from_millis(200)),
        ..spawn_in(dir.path(), sh("sleep 5"))
    })
    .await;
    assert!(matches!(ran.finished.ending, Ending::TimedOut(_)));
    assert_eq!(files.recorded_exit(), None);
}
