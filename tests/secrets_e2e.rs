//! Secrets end to end (issue 18): what a task's process sees of its worker, against real
//! `updraft` processes on both backends.

mod common;

use common::world::World;
use common::{Running, http_get};

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

// --- variables, connections and the secret key ------------------------------------------------

/// `updraft ARGS` on `world`, with `UPDRAFT_SECRET_KEY` = `key` when given; (code, out, err).
fn cli(world: &World, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = world.command(args);
    if let Some(key) = key {
        command.env("UPDRAFT_SECRET_KEY", key);
    }
    common::run(command)
}

fn ok(world: &World, key: Option<&str>, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(world, key, args);
    assert_eq!(code, 0, "updraft {args:?}: {stdout}{stderr}");
    stdout
}

fn new_key(world: &World) -> String {
    ok(world, None, &["secrets", "new-key"]).trim().to_owned()
}

/// The stored rows of `variable` and `connection`, as the database holds them.
fn stored(world: &World) -> String {
    world.with_store(async |store| {
        let mut text = String::new();
        for variable in store.list_variables().await.unwrap() {
            text.push_str(&format!("{variable:?}\n"));
        }
        for connection in store.list_connections().await.unwrap() {
            text.push_str(&format!("{connection:?}\n"));
        }
        for event in store.list_events(None, 1000).await.unwrap() {
            text.push_str(&format!("{event:?}\n"));
        }
        text
    })
}

const PASSWORD: &str = "p@ss/w0rd-XYZ";
const API_KEY: &str = "s3cret-api-key-123";
const TOKEN: &str = "tok-ENVALUE-9";

/// Sets a variable of each kind and a connection, and checks how each is shown and stored.
fn round_trip(world: &World, key: Option<&str>) {
    ok(world, key, &["variables", "set", "region", "eu-west-1"]);
    ok(
        world,
        key,
        &[
            "variables",
            "set",
            "api_key",
            API_KEY,
            "--description",
            "the API",
        ],
    );
    ok(
        world,
        key,
        &[
            "variables",
            "set",
            "plain_token",
            "not-hidden",
            "--not-secret",
        ],
    );
    ok(
        world,
        key,
        &["variables", "set", "config", r#"{"threshold": 3}"#],
    );
    let uri = "postgres://etl:p%40ss%2Fw0rd-XYZ@db.internal:5432/wh?sslmode=require";
    ok(
        world,
        key,
        &["connections", "add", "warehouse", "--uri", uri],
    );
    ok(
        world,
        key,
        &[
            "connections",
            "add",
            "api",
            "--type",
            "http",
            "--host",
            "api.example.com",
            "--password",
            TOKEN,
        ],
    );
    let listed = ok(world, key, &["variables", "list"]);
    assert!(
        listed.contains("eu-west-1") && listed.contains("not-hidden"),
        "{listed}"
    );
    assert!(
        !listed.contains(API_KEY) && listed.contains("***"),
        "{listed}"
    );
    assert_eq!(
        ok(world, key, &["variables", "get", "api_key"]).trim(),
        API_KEY
    );
    assert_eq!(
        ok(world, key, &["connections", "get", "warehouse"]).trim(),
        uri
    );
    let connections = ok(world, key, &["connections", "list"]);
    assert!(
        connections.contains("db.internal") && !connections.contains("w0rd"),
        "{connections}"
    );
    // The database holds neither secret in clear, nor do the events.
    let rows = stored(world);
    for secret in [API_KEY, PASSWORD, "p%40ss", TOKEN] {
        assert!(
            !rows.contains(secret),
            "{secret:?} is stored in clear:\n{rows}"
        );
    }
    assert!(
        rows.contains("not-hidden") && rows.contains("eu-west-1"),
        "{rows}"
    );
    assert!(
        rows.contains("variable_set") && rows.contains("connection_set"),
        "{rows}"
    );
}

#[test]
fn variables_and_connections_keep_secrets_sealed_on_sqlite() {
    let world = World::new();
    // On the home's SQLite file the first command that needs a key makes the key file.
    round_trip(&world, None);
    let key_file = world.home.join("secret.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&key_file.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Export, then import into another installation with another key.
    let exported = world.root.path().join("variables.json");
    ok(
        &world,
        None,
        &["variables", "export", exported.to_str().unwrap()],
    );
    let connections = world.root.path().join("connections.json");
    ok(
        &world,
        None,
        &["connections", "export", connections.to_str().unwrap()],
    );
    let other = World::new();
    ok(
        &other,
        None,
        &["variables", "import", exported.to_str().unwrap()],
    );
    ok(
        &other,
        None,
        &["connections", "import", connections.to_str().unwrap()],
    );
    assert_eq!(
        ok(&other, None, &["variables", "get", "api_key"]).trim(),
        API_KEY
    );
    assert_eq!(
        ok(&other, None, &["variables", "get", "config"]).trim(),
        r#"{"threshold":3}"#
    );
    assert_eq!(
        ok(&other, None, &["connections", "get", "warehouse"]),
        ok(&world, None, &["connections", "get", "warehouse"])
    );
    ok(&other, None, &["variables", "delete", "api_key"]);
    let (code, _, stderr) = cli(&other, None, &["variables", "get", "api_key"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no variable \"api_key\""), "{stderr}");
}

#[test]
fn a_shared_database_needs_the_key_in_the_environment_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    // No key file is made for a database other hosts share.
    let (code, _, stderr) = cli(&world, None, &["variables", "set", "db_password", "x"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no secret key: set UPDRAFT_SECRET_KEY"),
        "{stderr}"
    );
    assert!(!world.home.join("secret.key").exists());
    assert!(
        ok(&world, None, &["variables", "list"]).lines().count() <= 1,
        "nothing was stored"
    );
    let key = new_key(&world);
    round_trip(&world, Some(&key));
}

#[test]
fn a_wrong_key_fails_clearly_loses_nothing_and_rotation_moves_every_secret() {
    let world = World::new();
    let (old, new) = (new_key(&world), new_key(&world));
    round_trip(&world, Some(&old));
    let before = stored(&world);
    for args in [
        vec!["variables", "get", "api_key"],
        vec!["variables", "export", "-"],
        vec!["connections", "get", "warehouse"],
        vec!["secrets", "rotate-key"],
    ] {
        let (code, stdout, stderr) = cli(&world, Some(&new), &args);
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("it was sealed with key"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stdout.contains(API_KEY) && !stdout.contains("w0rd"),
            "{stdout}"
        );
    }
    let (code, _, stderr) = cli(&world, Some("not-a-key"), &["variables", "get", "api_key"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("UPDRAFT_SECRET_KEY") && stderr.contains("not base64"),
        "{stderr}"
    );
    // Nothing changed on the way.
    let unchanged = stored(&world);
    assert_eq!(
        unchanged
            .lines()
            .filter(|l| !l.contains("EventLog"))
            .collect::<Vec<_>>(),
        before
            .lines()
            .filter(|l| !l.contains("EventLog"))
            .collect::<Vec<_>>()
    );
    // Rotation: the new key first, the old one still listed to open what it sealed.
    let both = format!("{new},{old}");
    let said = ok(&world, Some(&both), &["secrets", "rotate-key"]);
    assert!(
        said.contains("sealed 1 variable(s) and 2 connection(s) again"),
        "{said}"
    );
    assert_eq!(
        ok(&world, Some(&new), &["variables", "get", "api_key"]).trim(),
        API_KEY
    );
    assert_eq!(
        ok(&world, Some(&new), &["connections", "get", "api"]).trim(),
        format!("http://:{TOKEN}@api.example.com")
    );
    let (code, _, _) = cli(&world, Some(&old), &["variables", "get", "api_key"]);
    assert_eq!(code, 1, "the old key opens nothing any more");
}

#[test]
fn a_key_file_others_may_read_is_refused() {
    let world = World::new();
    ok(&world, None, &["variables", "set", "api_key", API_KEY]);
    let key_file = world.home.join("secret.key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (code, _, stderr) = cli(&world, None, &["variables", "get", "api_key"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("may be read by others (mode 644): chmod 600 it"),
        "{stderr}"
    );
}

// --- secrets in templates: they reach the task and nowhere else ------------------------------

const JSON_SECRET: &str = "tok-json-secret-77";
const ENV_SECRET: &str = "env-secret-token-55";
const FOLDER_SECRET: &str = "folder-secret-99";

/// A task that reads each kind of secret, prints them (plainly and in base64) and writes one
/// to its outputs.
const USES_SECRETS: &str = r#"version: 1
tasks:
  use:
    connections: [warehouse]
    outputs: [out]
    env:
      API_KEY: "{{ var.value.api_key }}"
      REGION: "{{ var.value.region }}"
      THRESHOLD: "{{ var.json.config.threshold }}"
      JSON_PART: "{{ var.json.secret_config.token }}"
      ENV_TOKEN: "{{ var.value.env_token }}"
      FOLDER_PASS: "{{ var.value.folder_pass }}"
    run: |
      echo "region=$REGION threshold=$THRESHOLD default={{ var.value.get('missing', 'fallback') }}"
      echo "key=$API_KEY b64=$(printf %s "$API_KEY" | base64)"
      echo "json=$JSON_PART env=$ENV_TOKEN folder=$FOLDER_PASS"
      echo "host={{ conn.warehouse.host }} password={{ conn.warehouse.password }}"
      echo "uri=$UPDRAFT_CONN_WAREHOUSE"
      echo "upper=$(printf %s "$API_KEY" | tr a-z A-Z)"
      echo "out=$API_KEY" >> "$UPDRAFT_OUTPUT"
"#;

/// Every secret of the test, and the forms a masker hides.
fn all_secrets() -> Vec<String> {
    use base64::Engine as _;
    let mut all = Vec::new();
    for secret in [API_KEY, PASSWORD, JSON_SECRET, ENV_SECRET, FOLDER_SECRET] {
        all.push(secret.to_owned());
        all.push(base64::engine::general_purpose::STANDARD.encode(secret));
    }
    all.push("p%40ss%2Fw0rd-XYZ".to_owned());
    all
}

fn assert_no_secret(place: &str, text: &str) {
    for secret in all_secrets() {
        assert!(!text.contains(&secret), "{secret:?} is in {place}:\n{text}");
    }
}

/// Sets the variables and the connection, starts `processes` with a variable in their
/// environment and one in their secrets folder, runs the DAG and checks its log, and that no
/// secret is stored anywhere; returns the run id.
fn secrets_reach_the_task_only(
    world: &World,
    key: Option<&str>,
    processes: Vec<(std::process::Command, usize)>,
) -> (String, Vec<Running>) {
    ok(world, key, &["variables", "set", "region", "eu-west-1"]);
    ok(world, key, &["variables", "set", "api_key", API_KEY]);
    ok(
        world,
        key,
        &["variables", "set", "config", r#"{"threshold": 3}"#],
    );
    let json = format!(r#"{{"token": "{JSON_SECRET}"}}"#);
    ok(
        world,
        key,
        &["variables", "set", "secret_config", &json, "--secret"],
    );
    let uri = "postgres://etl:p%40ss%2Fw0rd-XYZ@db.internal:5432/wh";
    ok(
        world,
        key,
        &["connections", "add", "warehouse", "--uri", uri],
    );
    let folder = world.root.path().join("secrets");
    std::fs::create_dir_all(folder.join("variables")).unwrap();
    std::fs::write(
        folder.join("variables/folder_pass"),
        format!("{FOLDER_SECRET}\n"),
    )
    .unwrap();
    world.dag("uses_secrets", USES_SECRETS);
    let running: Vec<Running> = processes
        .into_iter()
        .enumerate()
        .map(|(index, (mut command, banner))| {
            command
                .env("UPDRAFT_LOG", "info")
                .env("UPDRAFT_VAR_ENV_TOKEN", ENV_SECRET)
                .env("UPDRAFT_SECRETS_FOLDER", &folder);
            if let Some(key) = key {
                command.env("UPDRAFT_SECRET_KEY", key);
            }
            let stderr = world.root.path().join(format!("secrets{index}.stderr"));
            Running::start(command, &stderr, banner)
        })
        .collect();
    let run_id = world.trigger("uses_secrets");
    let refs: Vec<&Running> = running.iter().collect();
    let runs = world.finished_runs("uses_secrets", 1, &refs);
    let log = world.log("uses_secrets", &run_id, "use", 1);
    assert_eq!(runs[0]["state"], "success", "{runs:?}\n{log}");
    for line in [
        "region=eu-west-1 threshold=3 default=fallback",
        "key=*** b64=***",
        "json=*** env=*** folder=***",
        "host=db.internal password=***",
        "uri=***",
        // The task got the value itself: a transformed value is not masked (as in Airflow).
        "upper=S3CRET-API-KEY-123",
    ] {
        assert!(log.lines().any(|l| l == line), "no {line:?} in:\n{log}");
    }
    assert_no_secret("the log", &log);
    // Nothing stored holds a secret: the log, the task instances (their plans hold
    // references), the outputs, the events.
    let stored = world.with_store(async |store| {
        let dag_id = updraft_core::ids::DagId::parse("uses_secrets").unwrap();
        let run = store
            .get_dag_run_by_run_id(&dag_id, &run_id)
            .await
            .unwrap()
            .unwrap();
        let mut text = String::new();
        for instance in store.list_task_instances(run.id).await.unwrap() {
            text.push_str(&format!("{instance:?}\n"));
            let key = instance.try_key();
            for chunk in store.read_task_log(key, 0, 1000).await.unwrap() {
                text.push_str(&String::from_utf8_lossy(&chunk.data));
            }
        }
        for output in store.list_task_outputs(run.id).await.unwrap() {
            text.push_str(&format!("{output:?}\n"));
        }
        for event in store.list_events(None, 1000).await.unwrap() {
            text.push_str(&format!("{event:?}\n"));
        }
        text
    });
    assert_no_secret("the database", &stored);
    assert!(
        stored.contains("${{updraft var api_key}}"),
        "the plan holds the reference:\n{stored}"
    );
    assert!(stored.contains("name: \"out\", value: \"***\""), "{stored}");
    (run_id, running)
}

/// Checks that the web server at `base` answers an admin (of API token `token`) with no
/// secret on the pages and API routes that show run `run_id`, the events, the variables and
/// the connections; and that it gives the admin a secret variable in clear where asked.
fn no_secret_is_answered(base: &str, run_id: &str, token: &str) {
    let run = run_id.replace('+', "%2B");
    for path in [
        format!("/api/v1/dags/uses_secrets/runs/{run}/tasks/use"),
        format!("/api/v1/dags/uses_secrets/runs/{run}/tasks/use/tries"),
        format!("/api/v1/dags/uses_secrets/runs/{run}/tasks/use/tries/1/log"),
        format!("/dags/uses_secrets/runs/{run}/tasks/use"),
        format!("/dags/uses_secrets/runs/{run}"),
        "/events".to_owned(),
        "/api/v1/events".to_owned(),
        "/variables".to_owned(),
        "/api/v1/variables".to_owned(),
        "/connections".to_owned(),
        "/api/v1/connections".to_owned(),
        "/api/v1/connections/warehouse".to_owned(),
    ] {
        let answer = http_get(base, &path, token);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert_no_secret(&path, &answer);
    }
    let clear = http_get(base, "/api/v1/variables/api_key", token);
    assert!(clear.contains(API_KEY), "{clear}");
}

#[test]
fn secrets_reach_a_standalone_task_and_no_row_page_or_api_answer_on_sqlite() {
    let world = World::new();
    let standalone = world.command(&["standalone", "--port", "0"]);
    let (run_id, running) = secrets_reach_the_task_only(&world, None, vec![(standalone, 5)]);
    let token = ok(&world, None, &["users", "token", "admin"])
        .trim()
        .to_owned();
    no_secret_is_answered(&running[0].url(), &run_id, &token);
}

#[test]
fn secrets_reach_a_remote_worker_task_and_no_row_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let key = new_key(&world);
    let scheduler = world.command(&["scheduler"]);
    let worker = world.command(&["worker", "--name", "w"]);
    let (run_id, _running) =
        secrets_reach_the_task_only(&world, Some(&key), vec![(scheduler, 0), (worker, 0)]);
    // A web server of its own, with the installation's key, as DEPLOYMENT.md runs one.
    let mut create = world.command(&[
        "users",
        "create",
        "ada",
        "--role",
        "admin",
        "--password-stdin",
    ]);
    create.stdin(std::process::Stdio::piped());
    let mut child = create.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a long password\n").unwrap();
    assert!(child.wait().unwrap().success());
    let token = ok(&world, Some(&key), &["users", "token", "ada"])
        .trim()
        .to_owned();
    let mut command = world.command(&["webserver", "--port", "0"]);
    command.env("UPDRAFT_SECRET_KEY", &key);
    let webserver = Running::start(command, &world.root.path().join("webserver.stderr"), 2);
    no_secret_is_answered(&webserver.url(), &run_id, &token);
}

/// A task that reads a secret variable and counts its runs in the work folder.
const READS_A_SECRET: &str = r#"version: 1
tasks:
  use:
    retries: 1
    retry_delay: 0s
    env:
      API_KEY: "{{ var.value.api_key }}"
    run: |
      echo "ran with $API_KEY"
      echo ran >> @WORK@/ran
"#;

#[test]
fn a_worker_with_a_wrong_key_fails_each_try_with_the_reason_and_runs_nothing_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let key = new_key(&world);
    let wrong = new_key(&world);
    ok(
        &world,
        Some(&key),
        &["variables", "set", "api_key", API_KEY],
    );
    world.dag("reads_a_secret", READS_A_SECRET);
    let start = |name: &str, args: &[&str], key: &str| {
        let mut command = world.command(args);
        command
            .env("UPDRAFT_LOG", "info")
            .env("UPDRAFT_SECRET_KEY", key);
        let stderr = world.root.path().join(format!("{name}.stderr"));
        Running::start(command, &stderr, 0)
    };
    let scheduler = start("scheduler", &["scheduler"], &key);
    let mut bad = start("bad", &["worker", "--name", "bad"], &wrong);
    let run_id = world.trigger("reads_a_secret");
    // Both tries (the first and its retry) fail before the command starts, with the reason.
    let runs = world.finished_runs("reads_a_secret", 1, &[&scheduler, &bad]);
    assert_eq!(runs[0]["state"], "failed", "{runs:?}");
    let instances = world.instances("reads_a_secret", &run_id);
    let (instance, tries) = &instances["use"];
    assert_eq!(instance.state.to_string(), "failed");
    assert_eq!(tries.len(), 2, "{tries:?}");
    for try_number in [1, 2] {
        let log = world.log("reads_a_secret", &run_id, "use", try_number);
        assert!(
            log.contains(
                "cannot look up the try's secrets: variable \"api_key\": it was sealed with key"
            ),
            "try {try_number}: {log}"
        );
        assert!(log.contains("the try did not start"), "{log}");
        assert_no_secret("the log", &log);
    }
    assert!(!world.work.join("ran").exists(), "the command never ran");
    // With the right key, a clear runs it once.
    assert_eq!(bad.terminate(std::time::Duration::from_secs(10)), Some(0));
    let good = start("good", &["worker", "--name", "good"], &key);
    world.ok(&["tasks", "clear", "reads_a_secret", "--yes"]);
    let runs = world.finished_runs("reads_a_secret", 1, &[&scheduler, &good]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let log = world.log("reads_a_secret", &run_id, "use", 3);
    assert!(log.contains("ran with ***"), "{log}");
    assert_eq!(
        std::fs::read_to_string(world.work.join("ran")).unwrap(),
        "ran\n"
    );
}
