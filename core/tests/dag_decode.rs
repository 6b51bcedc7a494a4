//! What a valid DAG file means once decoded. The broken-file corpus (`tests/dags/broken` at the
//! repository root) covers the error messages through the real binary.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveTime;
use updraft_core::dag::{
    Command, DAG_KEYS, Dag, HANDLER_KEYS, JSON_SCHEMA, LoadOptions, PARAM_KEYS, ParamType,
    SCHEDULE_KEYS, TASK_KEYS, decode,
};
use updraft_core::deadline::Deadline;
use updraft_core::notify::{Channel, NotifyEvent};
use updraft_core::state::TriggerRule;

fn check(text: &str) -> Dag {
    decode("dags/example.yaml", text, &LoadOptions::default())
        .unwrap_or_else(|errors| panic!("expected a valid DAG, got {errors:?}"))
}

fn messages(text: &str) -> Vec<String> {
    match decode("dags/example.yaml", text, &LoadOptions::default()) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .into_iter()
            .map(|d| format!("{}: {}", d.pos, d.message))
            .collect(),
    }
}

#[test]
fn the_id_defaults_to_the_file_stem() {
    let dag = check("tasks:\n  a:\n    run: echo a\n");
    assert_eq!(dag.id.as_str(), "example");
    assert_eq!(dag.fileloc, "dags/example.yaml");
}

#[test]
fn defaults_apply_unless_the_task_sets_the_key() {
    let dag = check(
        "defaults:\n  retries: 2\n  retry_delay: 30s\n  pool: etl\ntasks:\n  a:\n    run: \
         echo a\n  b:\n    run: echo b\n    retries: 5\n",
    );
    let a = dag.task("a").unwrap();
    let b = dag.task("b").unwrap();
    assert_eq!((a.retries, b.retries), (2, 5));
    assert_eq!(b.retry_delay, Duration::from_secs(30));
    assert_eq!(b.pool, "etl");
}

#[test]
fn airflow_defaults_fill_what_the_file_omits() {
    let dag = check("tasks:\n  a:\n    run: echo a\n");
    let a = dag.task("a").unwrap();
    assert_eq!(a.retries, 0);
    assert_eq!(a.retry_delay, Duration::from_secs(300));
    assert_eq!(a.pool, "default_pool");
    assert_eq!(a.queue, "default");
    assert_eq!(a.trigger_rule, TriggerRule::AllSuccess);
    assert_eq!(a.skip_on_exit_code, vec![99]);
    assert_eq!(dag.max_active_runs, 16);
    assert!(!dag.timetable.catchup);
}

#[test]
fn every_task_key_is_kept() {
    let dag = check(
        r#"
tasks:
  a:
    exec: [python3, job.py, "{{ ds }}", 3]
    outputs: [rows]
  b:
    depends_on: a
    run: echo {{ outputs.a.rows }}
    description: second
    env: {PORT: 5432, NAME: "{{ ds }}"}
    working_dir: /srv
    retries: 3
    retry_delay: 1m
    retry_exponential_backoff: true
    retry_jitter: true
    max_retry_delay: 30m
    timeout: 1h
    pool: warehouse
    pool_slots: 2
    rate_limit: 10/m
    priority_weight: -4
    queue: gpu
    trigger_rule: all_done
    skip_on_exit_code: [99, 100]
    depends_on_past: true
    kill_grace: 5s
    on_success: echo ok
    on_failure: {exec: [notify, failed]}
    on_retry: {run: echo retry, env: {LEVEL: warn}}
"#,
    );
    let a = dag.task("a").unwrap();
    assert_eq!(
        a.command,
        Command::Exec(vec![
            "python3".into(),
            "job.py".into(),
            "{{ ds }}".into(),
            "3".into()
        ])
    );
    let b = dag.task("b").unwrap();
    assert_eq!(b.depends_on, vec![a.id.clone()]);
    assert_eq!(b.env["PORT"], "5432");
    assert_eq!(b.working_dir.as_deref(), Some("/srv"));
    assert_eq!(b.max_retry_delay, Some(Duration::from_secs(1800)));
    assert_eq!(b.timeout, Some(Duration::from_secs(3600)));
    assert_eq!((b.pool_slots, b.priority_weight), (2, -4));
    assert_eq!(b.rate_limit, Some("10/m".parse().unwrap()));
    assert_eq!(a.rate_limit, None);
    assert_eq!(b.queue, "gpu");
    assert_eq!(b.trigger_rule, TriggerRule::AllDone);
    assert_eq!(b.skip_on_exit_code, vec![99, 100]);
    assert!(b.depends_on_past && b.retry_exponential_backoff && b.retry_jitter);
    assert!(!a.retry_jitter);
    assert_eq!(b.kill_grace, Duration::from_secs(5));
    assert_eq!(
        b.on_success.as_ref().unwrap().command,
        Command::Run("echo ok".into())
    );
    assert_eq!(b.on_retry.as_ref().unwrap().env["LEVEL"], "warn");
}

#[test]
fn a_schedule_may_jitter_each_start_and_a_dag_without_keeps_its_version() {
    let text = "start_date: 2024-01-01\nschedule: {cron: \"0 6 * * *\", jitter: 90s, \
                misfire_grace: 10m}\ntasks:\n  a: {run: x}\n";
    let dag = check(text);
    assert_eq!(dag.timetable.misfire_grace, Some(Duration::from_secs(600)));
    let jitter = dag.timetable.jitter.unwrap();
    assert_eq!(jitter.max, Duration::from_secs(90));
    assert_eq!(
        jitter,
        updraft_core::schedule::Jitter::of(jitter.max, "example")
    );
    // Nothing new in a DAG that does not use them: its version (and its hash) stay.
    let plain = check("start_date: 2024-01-01\nschedule: \"0 6 * * *\"\ntasks:\n  a: {run: x}\n");
    let serialized = serde_json::to_string(&plain).unwrap();
    assert!(
        !serialized.contains("jitter") && !serialized.contains("misfire"),
        "{serialized}"
    );
    assert!(check(&text.replace("90s", "0s")).timetable.jitter.is_none());
    let refused = messages(&text.replace("90s", "soon"));
    assert!(refused[0].contains("jitter"), "{refused:?}");
}

#[test]
fn a_list_of_cron_schedules_is_their_union_in_one_timezone() {
    let dag = check(
        "start_date: 2024-01-01\nschedule:\n  - {cron: \"0 8 * * 1-5\"}\n  - \"0 10 * * 6,0\"\n\
         tasks:\n  a: {run: x}\n",
    );
    assert_eq!(
        dag.timetable.schedule.to_string(),
        "0 8 * * 1-5 | 0 10 * * 6,0"
    );
    for (schedule, wanted) in [
        ("[]", "an empty list"),
        (
            "[\"0 8 * * *\", {every: 1h}]",
            "combines cron schedules, not \"every 1h\"",
        ),
        ("[\"0 8 * * *\", \"@once\"]", "not \"@once\""),
        (
            "[{cron: \"0 8 * * *\", timezone: Europe/Berlin}, \"0 9 * * *\"]",
            "share one timezone",
        ),
    ] {
        let text =
            format!("start_date: 2024-01-01\nschedule: {schedule}\ntasks:\n  a: {{run: x}}\n");
        let refused = messages(&text);
        assert!(
            refused.iter().any(|message| message.contains(wanted)),
            "{schedule}: {refused:?}"
        );
    }
}

#[test]
fn params_take_a_spec_or_a_bare_default() {
    let dag = check(
        "params:\n  region: {type: string, default: eu, enum: [eu, us]}\n  days: 7\n  \
         ratio: 0.5\n  dry_run: false\ntasks:\n  a:\n    run: echo {{ params.region }}\n",
    );
    let kinds: Vec<_> = dag.params.values().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ParamType::String,
            ParamType::Integer,
            ParamType::Number,
            ParamType::Boolean
        ]
    );
    assert_eq!(dag.params["days"].default, Some(serde_json::json!(7)));
    assert!(
        dag.params["region"]
            .check(&serde_json::json!("mars"))
            .is_err()
    );
}

#[test]
fn the_graph_follows_depends_on() {
    let dag = check(
        "tasks:\n  load:\n    depends_on: [t1, t2]\n    run: x\n  extract:\n    run: x\n  t1:\n    \
         depends_on: extract\n    run: x\n  t2:\n    depends_on: extract\n    run: x\n",
    );
    let ids = |tasks: Vec<&updraft_core::dag::Task>| -> Vec<String> {
        tasks.into_iter().map(|t| t.id.to_string()).collect()
    };
    assert_eq!(
        ids(dag.topological_order()),
        ["extract", "t1", "t2", "load"]
    );
    assert_eq!(ids(dag.downstream("extract")), ["load", "t1", "t2"]);
    assert_eq!(ids(dag.upstream("load")), ["extract", "t1", "t2"]);
    assert_eq!(ids(dag.leaves().collect()), ["load"]);
}

#[test]
fn json_round_trip_keeps_the_dag_and_its_hash() {
    let dag = check(
        "schedule: {cron: '0 2 * * *', timezone: Europe/Berlin}\nstart_date: 2024-01-01\n\
         timeout: 6h\ntasks:\n  a:\n    run: echo a\n  b:\n    depends_on: a\n    run: echo b\n",
    );
    let json = serde_json::to_string(&dag).unwrap();
    let back: Dag = serde_json::from_str(&json).unwrap();
    assert_eq!(back, dag);
    assert_eq!(back.version_hash(), dag.version_hash());
    assert_eq!(back.downstream("a").len(), 1, "the graph is rebuilt");
}

#[test]
fn formatting_does_not_change_the_version_hash_but_content_does() {
    let one = check("tasks:\n  a:\n    run: echo a\n");
    let same = check("# a comment\ntasks:\n  a: {run: echo a}\n");
    let other = check("tasks:\n  a:\n    run: echo b\n");
    assert_eq!(one.version_hash(), same.version_hash());
    assert_ne!(one.version_hash(), other.version_hash());
}

#[test]
fn start_date_is_midnight_in_the_dag_timezone() {
    let dag = check(
        "schedule: {cron: '@daily', timezone: Europe/Berlin}\nstart_date: 2024-07-01\n\
         end_date: 2024-07-31T12:00:00Z\ntasks:\n  a:\n    run: x\n",
    );
    assert_eq!(
        dag.timetable.start_date.unwrap().to_rfc3339(),
        "2024-06-30T22:00:00+00:00"
    );
    assert_eq!(
        dag.timetable.end_date.unwrap().to_rfc3339(),
        "2024-07-31T12:00:00+00:00"
    );
}

#[test]
fn every_problem_of_a_file_is_reported_in_order() {
    let found = messages(
        "scheduel: x\ntasks:\n  a:\n    run: echo {{ nope }}\n    retries: -1\n  b:\n    \
         depends_on: [a, zz]\n    exec: []\n",
    );
    assert_eq!(
        found,
        [
            "1:1: unknown key \"scheduel\"; did you mean \"schedule\"?",
            "4:10: task \"a\": \"run\": unknown template variable \"nope\"",
            "5:14: task \"a\": \"retries\" must be at least 0, found -1",
            "7:21: task \"b\": depends on unknown task \"zz\"",
            "8:11: task \"b\": \"exec\" is an empty list",
        ]
    );
}

#[test]
fn a_scheduled_dag_needs_a_start_date_but_a_manual_one_does_not() {
    assert_eq!(
        messages("schedule: '@daily'\ntasks:\n  a:\n    run: x\n"),
        ["1:1: a scheduled DAG needs \"start_date\" (the first data interval starts there)"]
    );
    assert!(messages("schedule: null\ntasks:\n  a:\n    run: x\n").is_empty());
}

/// The keys of an object in the schema (the properties of the node or of its `oneOf` branch
/// that has some).
fn schema_keys(schema: &serde_json::Value, pointer: &str) -> BTreeSet<String> {
    let node = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer}"));
    let properties = node.get("properties").cloned().or_else(|| {
        node["oneOf"]
            .as_array()?
            .iter()
            .find_map(|branch| branch.get("properties").cloned())
    });
    properties
        .unwrap_or_else(|| panic!("{pointer} has properties"))
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|k| k.to_string()).collect()
}

#[test]
fn the_json_schema_names_exactly_the_keys_the_decoder_accepts() {
    let schema: serde_json::Value = serde_json::from_str(JSON_SCHEMA).unwrap();
    assert_eq!(schema_keys(&schema, ""), keys(DAG_KEYS));
    assert_eq!(schema_keys(&schema, "/$defs/task"), keys(TASK_KEYS));
    assert_eq!(
        schema_keys(&schema, "/$defs/schedule_mapping"),
        keys(SCHEDULE_KEYS)
    );
    assert_eq!(schema_keys(&schema, "/$defs/param"), keys(PARAM_KEYS));
    assert_eq!(schema_keys(&schema, "/$defs/handler"), keys(HANDLER_KEYS));
    let rules: Vec<&str> = schema["$defs"]["task"]["properties"]["trigger_rule"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(rules, TriggerRule::names().collect::<Vec<_>>());
}

#[test]
fn a_bad_schedule_or_rule_does_not_hide_other_problems() {
    let found = messages(
        "schedule: '0 25 * * *'\nstart_date: 2024-01-01\ntasks:\n  a:\n    run: x\n    \
         trigger_rule: nope\n    retries: many\n",
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("1:11: schedule: invalid cron \"0 25 * * *\""),
        "{found:?}"
    );
    let limit = messages("tasks:\n  a:\n    run: x\n    rate_limit: 10 per minute\n");
    assert_eq!(
        limit,
        [
            "4:17: task \"a\": \"rate_limit\": bad rate limit \"10 per minute\" (no '/'); write \
          tries per period, e.g. 10/m, 2/s or 100/h"
        ]
    );
    assert_eq!(found[1], "6:19: task \"a\": unknown trigger rule \"nope\"");
    assert_eq!(
        found[2],
        "7:14: task \"a\": \"retries\" must be a whole number (0 or more), found the string \"many\""
    );
}

#[test]
fn deadlines_on_a_dag_and_its_tasks() {
    let dag = check(
        "deadline: {at: \"07:00\"}\ndefaults:\n  deadline: {after_start: 30m}\ntasks:\n  \
         a: {run: x}\n  b: {run: x, deadline: {after_interval_end: 2h}}\n",
    );
    assert_eq!(
        dag.deadline,
        Some(Deadline::At(NaiveTime::from_hms_opt(7, 0, 0).unwrap()))
    );
    assert_eq!(
        dag.task("a").unwrap().deadline,
        Some(Deadline::AfterStart(Duration::from_secs(1800)))
    );
    assert_eq!(
        dag.task("b").unwrap().deadline,
        Some(Deadline::AfterIntervalEnd(Duration::from_secs(7200)))
    );
    // A DAG without one keeps its version: nothing is serialized for it.
    let plain = check("tasks:\n  a: {run: x}\n");
    assert!(!serde_json::to_string(&plain).unwrap().contains("deadline"));

    let found = messages(
        "sla: 1h\ndeadline: {at: \"7 am\"}\ntasks:\n  a:\n    run: x\n    \
         deadline: {after_start: 30m, at: \"07:00\"}\n  b:\n    run: x\n    deadline: {in: 1h}\n",
    );
    assert_eq!(
        found,
        [
            "1:1: unknown key \"sla\" (Airflow's name; write `deadline: {after_interval_end: 2h}`)",
            "2:16: \"deadline.at\": bad time of day \"7 am\"; write HH:MM on the DAG's clock, \
             e.g. \"07:00\"",
            "6:15: task \"a\": \"deadline\" takes one of after_interval_end, after_start or at, \
             e.g. {after_interval_end: 2h}",
            "9:16: task \"b\": unknown key \"in\"",
        ]
    );
}

#[test]
fn notifiers_on_a_dag_and_a_task() {
    let dag = check(
        "notify:\n  - {on: [run_failed, deadline_missed], slack: {webhook: \"{{ var.value.hook }}\"}}\n  \
         - {on: run_succeeded, email: ops@example.com}\ntasks:\n  a:\n    run: x\n    notify:\n      \
         - on: [task_failed]\n        webhook: {url: \"https://h.example/x\", headers: {X-Key: k}}\n      \
         - {on: [task_retry], command: ./tell.sh}\n",
    );
    assert_eq!(dag.notify.len(), 2);
    assert_eq!(
        dag.notify[0].on,
        [NotifyEvent::RunFailed, NotifyEvent::DeadlineMissed]
    );
    assert_eq!(
        dag.notify[1].channel,
        Channel::Email {
            to: vec!["ops@example.com".to_owned()]
        }
    );
    let a = dag.task("a").unwrap();
    assert_eq!(a.notify[0].channel.kind(), "webhook");
    assert_eq!(a.notify[1].channel.kind(), "command");
    // A DAG without notifiers keeps its version: nothing is serialized for them.
    let plain = check("tasks:\n  a: {run: x}\n");
    assert!(!serde_json::to_string(&plain).unwrap().contains("notify"));

    let found = messages(
        "notify:\n  - {on: [run_faild], webhook: \"https://h\"}\n  - {on: [run_failed]}\n  \
         - {on: [run_failed], slack: ftp://x, teams: \"https://t\"}\n  \
         - {on: [run_failed], email: {to: [nobody]}}\n  \
         - {on: [run_failed], command: \"echo {{ ds }}\"}\ntasks:\n  a:\n    run: x\n    \
         notify: [{on: [run_failed], webhook: \"https://h\"}]\n",
    );
    assert_eq!(
        found,
        [
            "2:10: notify[0]: unknown event \"run_faild\"; did you mean \"run_failed\"?",
            "3:5: notify[1]: give one channel of webhook, slack, teams, email or command, not none",
            "4:5: notify[2]: give one channel of webhook, slack, teams, email or command, not \
             slack and teams",
            "5:31: notify[3]: \"email\" needs addresses to send to (to: [oncall@example.com]), \
             not \"nobody\"",
            "6:33: notify[4]: a notify command is not templated: it reads the notice from \
             $UPDRAFT_NOTICE (JSON) and $UPDRAFT_EVENT, $UPDRAFT_DAG_ID, ...",
            "10:19: task \"a\": notify[0]: \"run_failed\" is an event of the run: put it in the \
             DAG's notify",
        ]
    );
}
