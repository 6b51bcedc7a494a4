//! Secrets end to end (issue 18): what a task's process sees of its worker, against real
//! `updraft` processes on both backends.

mod common;

use common::Running;
use common::world::World;

/// A DAG whose task prints its whole environment; the DAG and the task each list a name to
/// inherit, and the DAG declares one value.
const PRINTS_ENV: &str = r#"version: 1
inherit_env: [DAG_LISTED]
env:
  DECLARED: "from the dag"
tasks:
  show:
    inherit_env: [TASK_LISTED]
    run: env | sort
"#;

/// What the worker's environment holds besides what `updraft` itself sets: a name nobody
/// lists, one each list names, and the one `--inherit-env` names.
const WORKER_ENV: &[(&str, &str)] = &[
    ("NOT_LISTED", "must-not-leak"),
    ("DAG_LISTED", "dag-value"),
    ("TASK_LISTED", "task-value"),
    ("WORKER_LISTED", "worker-value"),
];

/// Runs the DAG once on `world` (whose database the processes reach through
/// `UPDRAFT_DATABASE_URL` = `url`, as DEPLOYMENT.md configures a worker) and returns the
/// task's log.
/// `processes` are the commands to start, each with the lines of its banner.
fn printed_env(world: &World, url: &str, processes: Vec<(std::process::Command, usize)>) -> String {
    world.dag("prints_env", PRINTS_ENV);
    let running: Vec<Running> = processes
        .into_iter()
        .enumerate()
        .map(|(index, (mut command, banner))| {
            command
                .env("UPDRAFT_DATABASE_URL", url)
                .env("UPDRAFT_LOG", "info");
            for (name, value) in WORKER_ENV {
                command.env(name, value);
            }
            let stderr = world.root.path().join(format!("process{index}.stderr"));
            Running::start(command, &stderr, banner)
        })
        .collect();
    let run_id = world.trigger("prints_env");
    let refs: Vec<&Running> = running.iter().collect();
    let runs = world.finished_runs("prints_env", 1, &refs);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    world.log("prints_env", &run_id, "show", 1)
}

fn assert_clean(log: &str, url: &str) {
    for line in [
        "DECLARED=from the dag",
        "DAG_LISTED=dag-value",
        "TASK_LISTED=task-value",
        "WORKER_LISTED=worker-value",
        "UPDRAFT_DAG_ID=prints_env",
        "UPDRAFT_TASK_ID=show",
        "UPDRAFT_TRY_NUMBER=1",
    ] {
        assert!(log.lines().any(|l| l == line), "no {line:?} in:\n{log}");
    }
    assert!(log.lines().any(|l| l.starts_with("PATH=")), "{log}");
    assert!(
        log.lines().any(|l| l.starts_with("UPDRAFT_OUTPUT=")),
        "{log}"
    );
    for leak in [
        "NOT_LISTED=",
        "must-not-leak",
        "UPDRAFT_DATABASE_URL=",
        "UPDRAFT_HOME=",
        "UPDRAFT_LOG=",
        "UPDRAFT_INHERIT_ENV=",
        url,
    ] {
        assert!(!log.contains(leak), "{leak:?} leaked into the task:\n{log}");
    }
    // Only the basics, the listed names, the DAG's and Updraft's context.
    let names: Vec<&str> = log
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| !name.starts_with("UPDRAFT_"))
        .collect();
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "USER",
        "DECLARED",
        "DAG_LISTED",
        "TASK_LISTED",
        "WORKER_LISTED",
        // Set by the shell itself.
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    for name in names {
        assert!(allowed.contains(&name), "{name} reached the task:\n{log}");
    }
}

#[test]
fn a_standalone_task_sees_no_more_of_its_worker_than_it_lists_on_sqlite() {
    let world = World::new();
    let url = format!("sqlite:{}", world.home.join("updraft.db").display());
    let standalone = world.command(&[
        "standalone",
        "--port",
        "0",
        "--inherit-env",
        "WORKER_LISTED",
    ]);
    let log = printed_env(&world, &url, vec![(standalone, 5)]);
    assert_clean(&log, &url);
}

#[test]
fn a_remote_worker_task_sees_no_more_of_its_worker_than_it_lists_on_postgres() {
    let Some((world, database)) = World::on_postgres() else {
        return;
    };
    let url = database.url().to_owned();
    // The processes get the URL from their environment only.
    let scheduler = world.command_on(None, &["scheduler"]);
    let mut worker = world.command_on(None, &["worker", "--name", "w"]);
    worker.env("UPDRAFT_INHERIT_ENV", "WORKER_LISTED");
    let log = printed_env(&world, &url, vec![(scheduler, 0), (worker, 0)]);
    assert_clean(&log, &url);
}

#[test]
fn inherit_env_refuses_updraft_names_in_dags_and_flags() {
    let world = World::new();
    world.dag(
        "greedy",
        "version: 1\ninherit_env: [UPDRAFT_DATABASE_URL]\ntasks:\n  t:\n    inherit_env: [\"1X\"]\n    run: env\n",
    );
    let (code, stdout, stderr) = common::run(world.command(&["dags", "validate"]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("inherit_env: \"UPDRAFT_DATABASE_URL\": variables named UPDRAFT_* are Updraft's own and are never passed to a task"),
        "{said}"
    );
    assert!(
        said.contains("inherit_env: \"1X\" is not a variable name"),
        "{said}"
    );
    for args in [
        vec!["worker", "--inherit-env", "UPDRAFT_HOME"],
        vec!["standalone", "--inherit-env", "A,UPDRAFT_DATABASE_URL"],
    ] {
        let (code, _, stderr) = common::run(world.command(&args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("never passed to a task"),
            "{args:?}: {stderr}"
        );
    }
}
