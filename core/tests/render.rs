//! Rendering a task's templates for one try: Airflow's context names and values, the
//! environment, handlers and the run's params.

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde_json::json;
use updraft_core::dag::{Command, Dag, LoadOptions, decode};
use updraft_core::ids::TaskId;
use updraft_core::render::{
    Context, Outputs, RenderError, Rendered, RunContext, effective_params, environment,
    render_dag_handler, render_task,
};
use updraft_core::state::{DagRunState, RunType};

const DAG: &str = "\
id: sales
params:
  region: {type: string, default: eu, enum: [eu, us]}
  limit: 10
env:
  OUT_DIR: /data/{{ ds }}
  LEVEL: dag
tasks:
  extract:
    run: ./extract.sh
    outputs: [rows]
  load:
    depends_on: extract
    run: ./load.sh --rows {{ outputs.extract.rows }}
";

fn dag(text: &str) -> Dag {
    decode("dags/sales.yaml", text, &LoadOptions::default())
        .unwrap_or_else(|errors| panic!("expected a valid DAG, got {errors:?}"))
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A scheduled daily run: Airflow 2's data interval [logical date, next day).
fn run_at(dag: &Dag, logical_date: &str, conf: serde_json::Value) -> RunContext {
    let logical_date = at(logical_date);
    RunContext {
        dag_id: dag.id.clone(),
        run_id: format!("scheduled__{}", logical_date.to_rfc3339()),
        run_type: RunType::Scheduled,
        logical_date,
        data_interval_start: logical_date,
        data_interval_end: logical_date + chrono::Duration::days(1),
        params: effective_params(dag, &conf).unwrap(),
        catalog: Default::default(),
        conf,
    }
}

fn context<'a>(run: &'a RunContext, task: &str, outputs: Outputs) -> Context<'a> {
    Context {
        run,
        task_id: TaskId::parse(task).unwrap(),
        try_number: 2,
        outputs,
    }
}

fn outputs(entries: &[(&str, &str, &str)]) -> Outputs {
    let mut outputs = Outputs::new();
    for (task, name, value) in entries {
        outputs
            .entry((*task).to_owned())
            .or_default()
            .insert((*name).to_owned(), (*value).to_owned());
    }
    outputs
}

/// Renders `template` as the command of task `extract` of `DAG`, for a run at `logical_date`.
fn render(template: &str, logical_date: &str) -> Result<String, RenderError> {
    let dag = dag(DAG);
    let mut task = dag.task("extract").unwrap().clone();
    task.command = Command::Run(template.to_owned());
    let run = run_at(&dag, logical_date, json!({"note": "hi"}));
    let rendered = render_task(&dag, &task, &context(&run, "extract", Outputs::new()))?;
    match rendered.command {
        Command::Run(line) => Ok(line),
        Command::Exec(_) => unreachable!("a run command renders as one"),
    }
}

#[test]
fn context_names_render_as_airflow_renders_them() {
    // Expected values: Airflow 2.10's TaskInstance.get_template_context, where
    // ds = logical_date.strftime("%Y-%m-%d"), ds_nodash = ds without dashes,
    // ts = logical_date.isoformat() (microseconds only when not zero),
    // ts_nodash = logical_date.strftime("%Y%m%dT%H%M%S"), all in UTC; a date-time prints as
    // its isoformat(). The run is a daily one with data interval [logical date, next day).
    let cases = [
        ("2024-01-31T00:00:00Z", "{{ ds }}", "2024-01-31"),
        ("2024-01-31T00:00:00Z", "{{ ds_nodash }}", "20240131"),
        (
            "2024-01-31T00:00:00Z",
            "{{ ts }}",
            "2024-01-31T00:00:00+00:00",
        ),
        ("2024-01-31T00:00:00Z", "{{ ts_nodash }}", "20240131T000000"),
        (
            "2024-01-31T00:00:00Z",
            "{{ logical_date }}",
            "2024-01-31T00:00:00+00:00",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ data_interval_start }}",
            "2024-01-31T00:00:00+00:00",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ data_interval_end }}",
            "2024-02-01T00:00:00+00:00",
        ),
        ("2024-02-29T13:45:30.25Z", "{{ ds }}", "2024-02-29"),
        ("2024-02-29T13:45:30.25Z", "{{ ds_nodash }}", "20240229"),
        (
            "2024-02-29T13:45:30.25Z",
            "{{ ts }}",
            "2024-02-29T13:45:30.250000+00:00",
        ),
        (
            "2024-02-29T13:45:30.25Z",
            "{{ ts_nodash }}",
            "20240229T134530",
        ),
        (
            "2024-02-29T13:45:30.25Z",
            "{{ logical_date }}",
            "2024-02-29T13:45:30.250000+00:00",
        ),
        (
            "2024-02-29T13:45:30.25Z",
            "{{ data_interval_end }}",
            "2024-03-01T13:45:30.250000+00:00",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ run_id }}",
            "scheduled__2024-01-31T00:00:00+00:00",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ dag_run.run_id }}",
            "scheduled__2024-01-31T00:00:00+00:00",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ dag_run.run_type }}",
            "scheduled",
        ),
        ("2024-01-31T00:00:00Z", "{{ dag_run.conf.note }}", "hi"),
        (
            "2024-01-31T00:00:00Z",
            "{{ dag_run.logical_date }}",
            "2024-01-31T00:00:00+00:00",
        ),
        ("2024-01-31T00:00:00Z", "{{ dag.dag_id }}", "sales"),
        ("2024-01-31T00:00:00Z", "{{ task.task_id }}", "extract"),
        (
            "2024-01-31T00:00:00Z",
            "{{ ti.task_id }}.{{ ti.dag_id }}",
            "extract.sales",
        ),
        ("2024-01-31T00:00:00Z", "{{ ti.try_number }}", "2"),
        ("2024-01-31T00:00:00Z", "{{ ti.run_id == run_id }}", "True"),
        (
            "2024-01-31T00:00:00Z",
            "{{ params.region }} {{ params.limit }}",
            "eu 10",
        ),
        // Date-time attributes and methods, as on Airflow's pendulum date-times.
        (
            "2024-02-29T13:45:30.25Z",
            "{{ logical_date.year }}-{{ logical_date.hour }}",
            "2024-13",
        ),
        (
            "2024-02-29T13:45:30.25Z",
            "{{ logical_date.strftime('%d/%m/%Y %H') }}",
            "29/02/2024 13",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{{ data_interval_end.isoformat() }}",
            "2024-02-01T00:00:00+00:00",
        ),
        // Strict undefined still lets a template test and default.
        (
            "2024-01-31T00:00:00Z",
            "{{ dag_run.conf.missing | default('d') }}",
            "d",
        ),
        (
            "2024-01-31T00:00:00Z",
            "{% if dag_run.conf.x is defined %}x{% endif %}.",
            ".",
        ),
    ];
    for (logical_date, template, expected) in cases {
        assert_eq!(
            render(template, logical_date).as_deref(),
            Ok(expected),
            "{template} at {logical_date}"
        );
    }
}

#[test]
fn macros_add_days_and_format_dates() {
    // Airflow's macros.ds_add: datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days).
    let cases = [
        ("{{ macros.ds_add(ds, 1) }}", "2024-02-01"),
        ("{{ macros.ds_add(ds, -31) }}", "2023-12-31"),
        ("{{ macros.ds_add('2024-02-28', 1) }}", "2024-02-29"),
        ("{{ macros.ds_add('2023-02-28', 1) }}", "2023-03-01"),
        ("{{ macros.ds_add('2024-12-31', 1) }}", "2025-01-01"),
        ("{{ macros.ds_add('2024-03-01', -1) }}", "2024-02-29"),
        ("{{ macros.ds_add(ds, 0) }}", "2024-01-31"),
        ("{{ macros.ds_add(ds, 366) }}", "2025-01-31"),
        (
            "{{ macros.ds_format(ds, '%Y-%m-%d', '%d.%m.%Y') }}",
            "31.01.2024",
        ),
        (
            "{{ macros.ds_format(ts_nodash, '%Y%m%dT%H%M%S', '%H:%M') }}",
            "00:00",
        ),
    ];
    for (template, expected) in cases {
        assert_eq!(
            render(template, "2024-01-31T00:00:00Z").as_deref(),
            Ok(expected),
            "{template}"
        );
    }
    let error = render(
        "{{ macros.ds_add('31/01/2024', 1) }}",
        "2024-01-31T00:00:00Z",
    )
    .unwrap_err();
    assert_eq!(error.field, "run");
    assert!(
        error
            .message
            .contains("\"31/01/2024\" is not a YYYY-MM-DD date"),
        "{error}"
    );
    // A bad format is an error, not a panic.
    let error = render("{{ logical_date.strftime('%Q') }}", "2024-01-31T00:00:00Z").unwrap_err();
    assert_eq!(
        error.to_string(),
        "run: invalid operation: invalid date format \"%Q\""
    );
}

#[test]
fn upstream_outputs_reach_templates() {
    let dag = dag(DAG);
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let ctx = context(&run, "load", outputs(&[("extract", "rows", "42")]));
    let rendered = render_task(&dag, dag.task("load").unwrap(), &ctx).unwrap();
    assert_eq!(
        rendered.command,
        Command::Run("./load.sh --rows 42".to_owned())
    );
}

#[test]
fn an_output_the_upstream_task_did_not_write_is_an_error_naming_it() {
    let dag = dag(DAG);
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let expected = "run: undefined value: outputs.extract.rows \
                    (task \"extract\" wrote no output \"rows\")";
    for written in [outputs(&[]), outputs(&[("extract", "other", "1")])] {
        let ctx = context(&run, "load", written);
        let error = render_task(&dag, dag.task("load").unwrap(), &ctx).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn errors_name_the_field_and_the_template_line() {
    let dag = dag(
        "tasks:\n  t:\n    exec: [echo, ok, '{{ dag_run.conf.target }}']\n    \
         env: {TARGET: '{{ dag_run.conf.target }}'}\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let error = render_task(
        &dag,
        dag.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "exec[2]: undefined value: dag_run.conf.target"
    );

    let multi_line = "echo start\necho {{ dag_run.conf.target }}\n";
    let error = render(multi_line, "2024-01-31T00:00:00Z").unwrap_err();
    assert_eq!(
        error.to_string(),
        "run: undefined value: dag_run.conf.target (template line 2)"
    );
}

#[test]
fn a_minus_before_an_attribute_is_explained() {
    // minijinja reads `-params.days` as `(-params).days`; Jinja2 (Airflow) as `-(params.days)`.
    let negated = dag("params: {days: 7}\ntasks:\n  t:\n    \
         run: echo {{ macros.ds_add(ds, -params.days) }}\n");
    let run = run_at(&negated, "2024-01-31T00:00:00Z", json!({}));
    let error = render_task(
        &negated,
        negated.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "run: invalid operation (`-params.days` negates `params` before reading the rest: \
         unlike Jinja2, a minus sign binds tighter than `.` and `[]` here; write \
         `-(params.days)`)"
    );
    let fixed = dag("params: {days: 7}\ntasks:\n  t:\n    \
         run: echo {{ macros.ds_add(ds, -(params.days)) }} {{ 3 -params.days }}\n");
    let rendered = render_task(
        &fixed,
        fixed.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap();
    assert_eq!(
        rendered.command,
        Command::Run("echo 2024-01-24 -4".to_owned())
    );
}

#[test]
fn params_are_defaults_overridden_by_conf() {
    let dag = dag(DAG);
    assert_eq!(
        effective_params(&dag, &json!({})),
        Ok(json!({"region": "eu", "limit": 10})
            .as_object()
            .unwrap()
            .clone())
    );
    assert_eq!(
        effective_params(&dag, &serde_json::Value::Null),
        Ok(json!({"region": "eu", "limit": 10})
            .as_object()
            .unwrap()
            .clone())
    );
    // Undeclared conf keys are params too (Airflow's dag_run_conf_overrides_params).
    let params = effective_params(&dag, &json!({"region": "us", "extra": [1]})).unwrap();
    assert_eq!(
        serde_json::Value::Object(params),
        json!({"region": "us", "limit": 10, "extra": [1]})
    );
}

#[test]
fn params_report_every_problem() {
    let dag = dag(
        "params:\n  region: {type: string, enum: [eu, us]}\n  day: {type: string}\n  \
         limit: {type: integer, default: 5, maximum: 10}\ntasks:\n  t: {run: x}\n",
    );
    assert_eq!(
        effective_params(&dag, &json!({"region": "mars", "limit": 11})),
        Err(vec![
            "param \"region\": \"mars\" is not one of \"eu\", \"us\"".to_owned(),
            "param \"day\" is required".to_owned(),
            "param \"limit\": 11 is more than the maximum 10".to_owned(),
        ])
    );
    assert_eq!(
        effective_params(&dag, &json!({"region": "eu", "day": 3})),
        Err(vec!["param \"day\": expected string, found 3".to_owned()])
    );
    assert_eq!(
        effective_params(&dag, &json!([1])),
        Err(vec!["conf must be a JSON object, found [1]".to_owned()])
    );
}

#[test]
fn environment_is_dag_then_task_then_updraft() {
    let dag = dag(
        "env: {A: dag, B: dag, C: '{{ ds }}'}\ntasks:\n  t:\n    run: x\n    \
         env: {B: task, C: overridden, UPDRAFT_DS: mine}\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let ctx = context(&run, "t", Outputs::new());
    let rendered = render_task(&dag, dag.task("t").unwrap(), &ctx).unwrap();
    let mut expected: IndexMap<String, String> = [("A", "dag"), ("B", "task"), ("C", "overridden")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    expected.extend(
        environment(&ctx)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    assert_eq!(rendered.env, expected);
    assert_eq!(rendered.env["UPDRAFT_DS"], "2024-01-31");
}

#[test]
fn updraft_variables_are_the_template_strings() {
    let dag = dag(DAG);
    let run = run_at(&dag, "2024-02-29T13:45:30.25Z", json!({}));
    let variables = environment(&context(&run, "extract", Outputs::new()));
    let expected = [
        ("UPDRAFT_DAG_ID", "sales"),
        ("UPDRAFT_RUN_ID", "scheduled__2024-02-29T13:45:30.250+00:00"),
        ("UPDRAFT_RUN_TYPE", "scheduled"),
        ("UPDRAFT_DS", "2024-02-29"),
        ("UPDRAFT_DS_NODASH", "20240229"),
        ("UPDRAFT_TS", "2024-02-29T13:45:30.250000+00:00"),
        ("UPDRAFT_LOGICAL_DATE", "2024-02-29T13:45:30.250000+00:00"),
        (
            "UPDRAFT_DATA_INTERVAL_START",
            "2024-02-29T13:45:30.250000+00:00",
        ),
        (
            "UPDRAFT_DATA_INTERVAL_END",
            "2024-03-01T13:45:30.250000+00:00",
        ),
        ("UPDRAFT_TASK_ID", "extract"),
        ("UPDRAFT_TRY_NUMBER", "2"),
    ];
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(variables, expected);
}

#[test]
fn exec_arguments_are_rendered_one_by_one() {
    let dag = dag(
        "tasks:\n  t:\n    exec: [python3, t.py, '{{ ds }}', '--run={{ run_id }}', '{{ ti.try_number }}']\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let rendered = render_task(
        &dag,
        dag.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap();
    assert_eq!(
        rendered.command,
        Command::Exec(vec![
            "python3".to_owned(),
            "t.py".to_owned(),
            "2024-01-31".to_owned(),
            "--run=scheduled__2024-01-31T00:00:00+00:00".to_owned(),
            "2".to_owned(),
        ])
    );
}

#[test]
fn plain_strings_are_untouched() {
    for plain in [
        "echo $HOME ${USER} { not a template }",
        "awk '{print $1}' in.txt\n",
        "",
    ] {
        assert_eq!(render(plain, "2024-01-31T00:00:00Z").as_deref(), Ok(plain));
    }
    // Rendering only substitutes: a templated string keeps its trailing newline too.
    assert_eq!(
        render("echo {{ ds }}\n", "2024-01-31T00:00:00Z").as_deref(),
        Ok("echo 2024-01-31\n")
    );
}

#[test]
fn task_handlers_are_rendered_with_the_full_environment() {
    let dag = dag(
        "env: {A: dag}\ntasks:\n  t:\n    run: x\n    working_dir: /work/{{ ds }}\n    \
         env: {B: task}\n    \
         on_failure: {run: 'notify {{ ti.try_number }}', env: {B: handler, C: '{{ ds_nodash }}'}}\n    \
         on_retry: {exec: [retry.sh, '{{ task.task_id }}']}\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let ctx = context(&run, "t", Outputs::new());
    let rendered = render_task(&dag, dag.task("t").unwrap(), &ctx).unwrap();
    assert_eq!(rendered.working_dir.as_deref(), Some("/work/2024-01-31"));
    assert_eq!(rendered.on_success, None);

    let on_failure = rendered.on_failure.unwrap();
    assert_eq!(on_failure.command, Command::Run("notify 2".to_owned()));
    let mut expected: IndexMap<String, String> =
        [("A", "dag"), ("B", "handler"), ("C", "20240131")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    expected.extend(
        environment(&ctx)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    assert_eq!(on_failure.env, expected);

    let on_retry = rendered.on_retry.unwrap();
    assert_eq!(
        on_retry.command,
        Command::Exec(vec!["retry.sh".to_owned(), "t".to_owned()])
    );
    assert_eq!(on_retry.env["B"], "task");
}

#[test]
fn handler_errors_name_the_handler() {
    let dag =
        dag("tasks:\n  t:\n    run: x\n    on_success: {run: 'done {{ dag_run.conf.who }}'}\n");
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let error = render_task(
        &dag,
        dag.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "on_success.run: undefined value: dag_run.conf.who"
    );
}

#[test]
fn dag_handlers_render_with_the_run_context() {
    let dag = dag("env: {OUT: '/data/{{ ds }}'}\ntasks:\n  t: {run: x}\n\
         on_failure: {run: 'notify {{ dag.dag_id }} {{ run_id }}', env: {WHY: '{{ dag_run.conf.why }}'}}\n");
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({"why": "disk"}));
    assert_eq!(
        render_dag_handler(&dag, DagRunState::Success, &run),
        Ok(None)
    );
    assert_eq!(
        render_dag_handler(&dag, DagRunState::Running, &run),
        Ok(None)
    );
    let handler = render_dag_handler(&dag, DagRunState::Failed, &run)
        .unwrap()
        .unwrap();
    assert_eq!(
        handler.command,
        Command::Run("notify sales scheduled__2024-01-31T00:00:00+00:00".to_owned())
    );
    assert_eq!(handler.env["OUT"], "/data/2024-01-31");
    assert_eq!(handler.env["WHY"], "disk");
    assert_eq!(handler.env["UPDRAFT_DS"], "2024-01-31");
    assert!(!handler.env.contains_key("UPDRAFT_TASK_ID"));
}

#[test]
fn dag_handlers_have_no_task() {
    let dag = dag(
        "env: {LOG: '/logs/{{ task.task_id }}'}\ntasks:\n  t: {run: x}\n\
         on_success: 'done {{ ti.try_number }}'\n\
         on_failure: {run: failed, env: {LOG: /logs/dag}}\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    assert_eq!(
        render_dag_handler(&dag, DagRunState::Success, &run)
            .unwrap_err()
            .to_string(),
        "env.LOG: undefined value: task.task_id \
         (a DAG handler runs for the whole run: it has no task)"
    );
    // A DAG handler's own env replaces the DAG's value, which is then never rendered.
    let handler = render_dag_handler(&dag, DagRunState::Failed, &run)
        .unwrap()
        .unwrap();
    assert_eq!(handler.env["LOG"], "/logs/dag");

    let dag = self::dag("tasks:\n  t: {run: x}\non_success: 'done {{ ti.try_number }}'\n");
    assert_eq!(
        render_dag_handler(&dag, DagRunState::Success, &run)
            .unwrap_err()
            .to_string(),
        "on_success.run: undefined value: ti.try_number \
         (a DAG handler runs for the whole run: it has no task)"
    );
}

#[test]
fn rendered_round_trips_through_json() {
    let dag = dag(
        "env: {A: '{{ ds }}'}\ntasks:\n  t:\n    exec: [echo, '{{ ts }}']\n    working_dir: /tmp\n    \
         on_failure: {run: notify}\n",
    );
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let rendered = render_task(
        &dag,
        dag.task("t").unwrap(),
        &context(&run, "t", Outputs::new()),
    )
    .unwrap();
    let json = serde_json::to_string(&rendered).unwrap();
    assert_eq!(serde_json::from_str::<Rendered>(&json).unwrap(), rendered);
}

/// A run whose templates read a catalog with plain and secret variables and a connection.
fn render_with_catalog(template: &str) -> Result<String, RenderError> {
    use updraft_core::secret::{Catalog, CatalogConnection, CatalogValue};
    let dag = dag(DAG);
    let mut task = dag.task("extract").unwrap().clone();
    task.command = Command::Run(template.to_owned());
    let mut catalog = Catalog::default();
    catalog.variables.insert(
        "region".to_owned(),
        CatalogValue::Plain("eu-west-1".to_owned()),
    );
    catalog.variables.insert(
        "config".to_owned(),
        CatalogValue::Plain(r#"{"threshold": 3, "zones": ["a", "b"]}"#.to_owned()),
    );
    catalog
        .variables
        .insert("api_key".to_owned(), CatalogValue::Secret);
    catalog
        .outside_variables
        .insert("ENV_TOKEN".to_owned(), CatalogValue::Secret);
    catalog.connections.insert(
        "warehouse".to_owned(),
        CatalogConnection {
            conn_type: "postgres".to_owned(),
            host: Some("db.internal".to_owned()),
            port: Some(5432),
            login: Some("etl".to_owned()),
            schema: Some("wh".to_owned()),
        },
    );
    let mut run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    run.catalog = std::sync::Arc::new(catalog);
    let rendered = render_task(&dag, &task, &context(&run, "extract", Outputs::new()))?;
    match rendered.command {
        Command::Run(line) => Ok(line),
        Command::Exec(_) => unreachable!("a run command renders as one"),
    }
}

#[test]
fn variables_render_in_place_and_secrets_as_references() {
    for (template, expected) in [
        ("{{ var.value.region }}", "eu-west-1"),
        ("{{ var.json.config.threshold + 1 }}", "4"),
        ("{{ var.json.config.zones | join(',') }}", "a,b"),
        ("{{ var.value.get('region', 'x') }}", "eu-west-1"),
        ("{{ var.value.get('missing', 'fallback') }}", "fallback"),
        ("{{ var.value.missing | default('d') }}", "d"),
        ("{{ var.value.api_key }}", "${{updraft var api_key}}"),
        (
            "{{ var.json.api_key.a.b }}",
            "${{updraft var.json api_key a/b}}",
        ),
        ("{{ var.value.env_token }}", "${{updraft var env_token}}"),
        (
            "{{ conn.warehouse.host }}:{{ conn.warehouse.port }}/{{ conn.warehouse.schema }}",
            "db.internal:5432/wh",
        ),
        ("{{ conn.warehouse.login }}", "etl"),
        (
            "{{ conn.warehouse.password }}",
            "${{updraft conn.password warehouse}}",
        ),
        (
            "{{ conn.warehouse.get_uri() }}",
            "${{updraft conn.uri warehouse}}",
        ),
        (
            "{{ conn.warehouse.extra_dejson.token }}",
            "${{updraft conn.extra warehouse token}}",
        ),
    ] {
        assert_eq!(
            render_with_catalog(template).unwrap(),
            expected,
            "{template}"
        );
    }
}

#[test]
fn a_missing_variable_or_connection_says_how_to_add_it() {
    let error = render_with_catalog("{{ var.value.nope }}").unwrap_err();
    assert!(
        error.message.contains("var.value.nope") && error.message.contains("updraft variables set"),
        "{error}"
    );
    let error = render_with_catalog("{{ var.value.get('nope') }}").unwrap_err();
    assert!(error.message.contains("no variable \"nope\""), "{error}");
    let error = render_with_catalog("{{ conn.nope.host }}").unwrap_err();
    assert!(error.message.contains("updraft connections add"), "{error}");
}

#[test]
fn a_task_gets_the_uri_of_each_connection_it_declares() {
    let dag = dag(
        "version: 1\ntasks:\n  load:\n    connections: [warehouse, missing]\n    run: ./load.sh\n",
    );
    let task = dag.task("load").unwrap();
    assert!(updraft_core::render::reads_catalog(&dag, task));
    let run = run_at(&dag, "2024-01-31T00:00:00Z", json!({}));
    let error = render_task(&dag, task, &context(&run, "load", Outputs::new())).unwrap_err();
    assert_eq!(error.field, "connections");
    assert!(
        error.message.contains("no connection \"warehouse\""),
        "{error}"
    );
}
