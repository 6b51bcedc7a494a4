//! Notifiers end to end (issue 19), against a real HTTP receiver and a real SMTP server
//! (aiosmtpd) on the loopback and real `updraft` processes on both backends: each event is told
//! once to each notifier that asked for it, in its channel's shape, with the link and the log
//! tail; a receiver that keeps failing is tried a bounded number of times and the failure is
//! shown; a slow or failing notifier delays no task and changes no state.

mod common;

use std::time::Duration;

use common::receivers::{HttpReceiver, SmtpSink};
use common::world::World;
use common::{Running, http_get};
use serde_json::Value;

/// `broken` fails twice (one retry); `after` runs once it is done, `report` never (so the run
/// fails); `slow` keeps the run going past its 1 s deadline. Every channel listens.
const TOLD: &str = r#"version: 1
deadline: {after_start: 1s}
notify:
  - on: [run_failed, task_failed]
    email: {to: [oncall@example.com]}
  - on: [run_failed, deadline_missed]
    slack: {webhook: "{{ var.value.hooks }}/slack"}
  - on: [run_failed]
    teams: "@HOOKS@/teams"
  - on: [run_failed]
    command: echo "$UPDRAFT_EVENT $UPDRAFT_DAG_ID $UPDRAFT_RUN_ID" >> @WORK@/told
tasks:
  broken:
    run: echo "about to fail"; exit 3
    retries: 1
    retry_delay: 0s
    notify:
      - on: [task_retry, task_failed]
        webhook:
          url: "@HOOKS@/ok"
          headers: {Authorization: "Bearer {{ var.value.hook_bearer }}"}
      - on: [task_failed]
        webhook: "@HOOKS@/fail"
      - on: [task_failed]
        webhook: "@HOOKS@/slow"
  after:
    depends_on: broken
    trigger_rule: all_done
    run: "true"
  report:
    depends_on: broken
    run: "true"
  slow:
    run: sleep 3
"#;

/// The run's notifications, from the API, once none is pending or sending.
fn settled(web: &str, token: &str, run_id: &str) -> Vec<Value> {
    let run = run_id.replace('+', "%2B");
    common::wait_for(
        "the notifications to settle",
        Duration::from_secs(90),
        || {
            let answer = http_get(
                web,
                &format!("/api/v1/dags/told/runs/{run}/notifications"),
                token,
            );
            let (_, body) = answer.split_once("\r\n\r\n")?;
            let items = serde_json::from_str::<Value>(body).ok()?["items"]
                .as_array()?
                .clone();
            let open = items
                .iter()
                .filter(|n| n["target"] != "task.broken.2")
                .any(|n| matches!(n["state"].as_str(), Some("pending" | "sending")));
            (items.len() >= 10 && !open).then_some(items)
        },
    )
}

/// The SMTP connection's URI for `smtp`: plain SMTP on the loopback.
fn smtp_uri(smtp: &SmtpSink) -> String {
    format!(
        "smtp://127.0.0.1:{}?from_email=updraft%40example.com&disable_ssl=true&disable_tls=true",
        smtp.port
    )
}

/// Runs the DAG with `hooks` and `smtp` listening and `processes` running, and checks what each
/// receiver got.
fn everyone_is_told_once(
    world: &World,
    web: &str,
    hooks: &HttpReceiver,
    smtp: &SmtpSink,
    processes: &[&Running],
) {
    world.ok(&["variables", "set", "hooks", &hooks.url]);
    world.ok(&["variables", "set", "hook_bearer", "t0ken"]);
    world.dag("told", &TOLD.replace("@HOOKS@", &hooks.url));
    let run_id = world.trigger("told");
    let runs = world.finished_runs("told", 1, processes);
    assert_eq!(runs[0]["state"], "failed");
    // No notifier held a task back: `after` ran right after `broken` failed, though the slow
    // receiver was still answering.
    let instances = world.instances("told", &run_id);
    assert_eq!(instances["broken"].0.state.to_string(), "failed");
    assert_eq!(instances["after"].0.state.to_string(), "success");
    let waited = instances["after"].1[0].start_date - instances["broken"].1[1].end_date.unwrap();
    assert!(
        waited < chrono::Duration::seconds(5),
        "after waited {waited}"
    );

    let token = world.ok(&["users", "token", "admin"]).trim().to_owned();
    let notifications = settled(web, &token, &run_id);
    let state_of = |target: &str, event: &str| -> Vec<(String, i64)> {
        notifications
            .iter()
            .filter(|n| n["target"] == target && n["event"] == event)
            .map(|n| {
                (
                    n["state"].as_str().unwrap().to_owned(),
                    n["attempts"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    // The webhook with its header, once per event, with the facts and the log's end.
    let ok = hooks.on("/ok");
    // Sent side by side, they may arrive in either order.
    let mut events: Vec<&str> = ok
        .iter()
        .map(|r| r.body["event"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(events, ["task_failed", "task_retry"], "{ok:?}");
    for request in &ok {
        assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(request.body["dag_id"], "told");
        assert_eq!(request.body["run_id"], run_id.as_str());
        assert_eq!(request.body["task_id"], "broken");
        assert_eq!(request.body["exit_code"], 3);
        assert!(
            request.body["log_tail"]
                .as_str()
                .unwrap()
                .contains("about to fail")
        );
        assert!(
            request.body["url"]
                .as_str()
                .unwrap()
                .contains("/dags/told/runs/")
        );
    }
    assert_eq!(
        state_of("task.broken.0", "task_failed"),
        [("sent".to_owned(), 1)]
    );
    // A receiver that keeps failing: three attempts, then failed, the reason kept.
    assert_eq!(hooks.on("/fail").len(), 3);
    assert_eq!(
        state_of("task.broken.1", "task_failed"),
        [("failed".to_owned(), 3)]
    );
    let failed = notifications
        .iter()
        .find(|n| n["target"] == "task.broken.1")
        .unwrap();
    assert_eq!(
        failed["last_error"],
        "the receiver answered HTTP 500 Internal Server Error"
    );
    // Slack (its URL from a variable) for the missed deadline and the failed run; Teams.
    let slack = hooks.on("/slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    assert!(slack.iter().any(|r| {
        r.body["text"]
            .as_str()
            .unwrap()
            .starts_with("*[updraft] told missed its deadline")
    }));
    let teams = hooks.on("/teams");
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].body["@type"], "MessageCard");
    // Mail: the task's failure and the run's, readable, with the link and the log.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let task_mail = mails
        .iter()
        .find(|m| m.contains("Subject: [updraft] told.broken failed"))
        .unwrap_or_else(|| panic!("{mails:?}"));
    assert!(task_mail.contains("To: oncall@example.com"), "{task_mail}");
    assert!(
        task_mail.contains("From: updraft@example.com"),
        "{task_mail}"
    );
    assert!(task_mail.contains("about to fail"), "{task_mail}");
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: [updraft] told run failed"))
    );
    // The command, once.
    let told = std::fs::read_to_string(world.work.join("told")).unwrap();
    assert_eq!(told, format!("run_failed told {run_id}\n"));
    // The run page lists them, the failure with its reason; no address is shown.
    let run = run_id.replace('+', "%2B");
    let page = http_get(web, &format!("/dags/told/runs/{run}"), &token);
    assert!(page.contains("<h2>Notifications</h2>"), "{page}");
    assert!(page.contains("the receiver answered HTTP 500"), "{page}");
    assert!(
        !page.contains(&hooks.url),
        "no receiver's address on the page"
    );
}

#[test]
fn everyone_is_told_once_by_a_standalone_on_sqlite() {
    let world = World::new();
    let Some(smtp) = SmtpSink::start(world.root.path()) else {
        return;
    };
    let hooks = HttpReceiver::start();
    let standalone = world.standalone("standalone", &[]);
    // The SMTP server's connection in the database, its extra sealed with the standalone's key.
    world.ok(&[
        "connections",
        "add",
        "smtp_default",
        "--uri",
        &smtp_uri(&smtp),
    ]);
    everyone_is_told_once(&world, &standalone.url(), &hooks, &smtp, &[&standalone]);
}

#[test]
fn everyone_is_told_once_by_two_schedulers_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let Some(smtp) = SmtpSink::start(world.root.path()) else {
        return;
    };
    let hooks = HttpReceiver::start();
    // The SMTP server's connection in the schedulers' environment (Airflow's AIRFLOW_CONN_*).
    let scheduler = |name: &str| {
        let mut command =
            world.command(&["--base-url", "https://updraft.example.com", "scheduler"]);
        command
            .env("UPDRAFT_LOG", "info")
            .env("UPDRAFT_CONN_SMTP_DEFAULT", smtp_uri(&smtp));
        Running::start(
            command,
            &world.root.path().join(format!("{name}.stderr")),
            0,
        )
    };
    let first = scheduler("scheduler1");
    let second = scheduler("scheduler2");
    let worker = world.start("worker", &["worker", "--name", "w"], 0);
    let mut create = world.command(&["users", "create", "admin", "--role", "admin"]);
    create
        .arg("--password-stdin")
        .stdin(std::process::Stdio::piped());
    let mut child = create.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a long password\n").unwrap();
    assert!(child.wait().unwrap().success());
    let mut command = world.command(&["webserver", "--port", "0"]);
    command.env("UPDRAFT_LOG", "info");
    let web = Running::start(command, &world.root.path().join("webserver.stderr"), 2);
    everyone_is_told_once(
        &world,
        &web.url(),
        &hooks,
        &smtp,
        &[&first, &second, &worker],
    );
}
