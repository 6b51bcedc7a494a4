//! Rendering a task's templates for one try, and the `UPDRAFT_*` environment (DESIGN §3).
//!
//! This module owns what a template sees at run time: Airflow 2.10's context names
//! (`template::CONTEXT_NAMES`, exactly those), their values for one try, and the effective
//! params of a run. It is pure: the caller hands it the run, the try number and the upstream
//! outputs; it reads no clock, no database and no file.
//!
//! Decisions:
//! - **Airflow's values, in UTC.** `ds` is `%Y-%m-%d` of the logical date, `ds_nodash`
//!   `%Y%m%d`, `ts` Python's `isoformat()` (`2024-01-31T00:00:00+00:00`, with `.ffffff` only when
//!   there are microseconds), `ts_nodash` `%Y%m%dT%H%M%S`. `logical_date`,
//!   `data_interval_start` and `data_interval_end` (also on `dag_run`) are date-times that
//!   render as `isoformat()` too, and keep `.year` ... `.microsecond`, `.isoformat()` and
//!   `.strftime(format)` (chrono's specifiers, which agree with Python's except `%f`, which is
//!   nanoseconds here). Airflow 2.10 on pendulum 3 prints `str(logical_date)` with a space
//!   instead of the `T` (python-pendulum/pendulum#822); we keep ISO 8601.
//! - **Objects** carry the attributes Airflow users reach for: `dag_run` (`dag_id`, `run_id`,
//!   `run_type`, `conf`, `logical_date`, `data_interval_start`, `data_interval_end`), `dag`
//!   (`dag_id`), `task` (`task_id`), `ti` (`dag_id`, `task_id`, `run_id`, `try_number`: the try
//!   about to run, 1-based, as Airflow 2.10 counts it), `macros.ds_add(ds, days)` and
//!   `macros.ds_format(ds, input_format, output_format)`, `outputs.<task>.<name>`.
//! - **Strict undefined**, as Airflow's `StrictUndefined`: printing, testing or iterating an
//!   undefined value is an error naming the variable (`is defined` and `| default(...)` still
//!   work). Python's `dict.get` is not there: write `dag_run.conf.x | default("y")`.
//! - **Rendering only substitutes**: autoescape is off (these are shell commands), a trailing
//!   newline is kept, and strings without template syntax never reach the engine, so a plain
//!   command is returned as written. Scalars print as in Python (`True`, `None`), which
//!   minijinja does too; lists and maps print in minijinja's (JSON-like) form.
//! - **Environment**: the DAG's `env`, overlaid by the task's, then by a handler's, then the
//!   `UPDRAFT_*` variables on top. A value that is overridden is never rendered.
//! - **DAG handlers** (`on_success`/`on_failure` of the DAG) run once for the whole run: their
//!   context is the run's (`RunContext`) and has no `task`, `ti` or `outputs`, and their
//!   environment has no `UPDRAFT_TASK_ID` or `UPDRAFT_TRY_NUMBER`. A value of the DAG's `env`
//!   that reads `task` or `ti` fails when a DAG handler inherits it, with an error saying why;
//!   the handler's own `env` may override it.
//! - **Params**: Airflow 2.10 with `dag_run_conf_overrides_params`: the declared defaults,
//!   overridden by the conf's keys of the same name; undeclared conf keys are params too.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use indexmap::IndexMap;
use minijinja::value::{Object, ObjectRepr, Value, ValueKind, from_args};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, context};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::dag::{Command, Dag, Handler, Task};
use crate::ids::{DagId, TaskId};
use crate::secret::{Catalog, CatalogValue, ConnectionField, Reference, connection_env_name};
use crate::state::{DagRunState, HandlerName, RunType, TaskState};
use crate::template;

/// What every try of a DAG run knows: the run's identity, dates, params and conf.
#[derive(Debug, Clone, PartialEq)]
pub struct RunContext {
    pub dag_id: DagId,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// The run's effective params (`effective_params`), what `params` reads.
    pub params: Map<String, serde_json::Value>,
    /// The run's conf as triggered (`{}` when none), what `dag_run.conf` reads.
    pub conf: serde_json::Value,
    /// What `var` and `conn` read (empty for templates that read neither, see
    /// [`reads_catalog`]).
    pub catalog: Arc<Catalog>,
}

/// Outputs of upstream tasks: task id -> output name -> value.
pub type Outputs = BTreeMap<String, BTreeMap<String, String>>;

/// What one try of one task knows: its run, which try it is, and its upstream tasks' outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Context<'a> {
    pub run: &'a RunContext,
    /// The id of the task being rendered (`task.id` in `render_task`).
    pub task_id: TaskId,
    /// The try about to run, 1-based.
    pub try_number: u32,
    /// Only upstream tasks' outputs need to be here: templates cannot read others.
    pub outputs: Outputs,
}

/// A task's command, environment and handlers for one try, ready to execute: the heart of its
/// [`TryPlan`](crate::plan::TryPlan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub command: Command,
    /// The full environment of the process, `UPDRAFT_*` included (not `UPDRAFT_OUTPUT`, which
    /// the executor sets).
    pub env: IndexMap<String, String>,
    /// Names of the worker's environment it gets besides the basics: the DAG's and the task's
    /// `inherit_env` (`crate::worker_env`).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    pub working_dir: Option<String>,
    pub on_success: Option<RenderedHandler>,
    pub on_failure: Option<RenderedHandler>,
    pub on_retry: Option<RenderedHandler>,
}

impl Rendered {
    /// The rendered handler `name`, if the task declares one.
    pub fn handler(&self, name: HandlerName) -> Option<&RenderedHandler> {
        match name {
            HandlerName::OnSuccess => self.on_success.as_ref(),
            HandlerName::OnRetry => self.on_retry.as_ref(),
            HandlerName::OnFailure => self.on_failure.as_ref(),
        }
    }
}

/// A handler ready to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedHandler {
    pub command: Command,
    /// The full environment: the DAG's, the task's (for task handlers), the handler's and
    /// `UPDRAFT_*`.
    pub env: IndexMap<String, String>,
    /// As its task's (`Rendered::inherit_env`), or its DAG's for a DAG handler.
    #[serde(default)]
    pub inherit_env: Vec<String>,
}

/// A template that failed to render, and which field of the task or handler it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    /// `run`, `exec[1]`, `env.TARGET`, `working_dir`, `on_failure.run`, ...
    pub field: String,
    pub message: String,
}

/// Renders `task`'s command, environment, working directory and handlers for the try `ctx`
/// describes. `ctx.task_id` is `task.id`.
pub fn render_task(dag: &Dag, task: &Task, ctx: &Context) -> Result<Rendered, RenderError> {
    debug_assert_eq!(ctx.task_id, task.id, "the context is another task's");
    let renderer = Renderer::new(|| task_value(ctx));
    let variables = environment(ctx);

    let command = renderer.command(&task.command, "")?;
    let working_dir = task
        .working_dir
        .as_deref()
        .map(|dir| renderer.render(dir, || "working_dir".to_owned()))
        .transpose()?;
    let mut env = IndexMap::new();
    renderer.env(&overlay(&dag.env, &task.env), "", &mut env)?;
    let mut inherit_env = dag.inherit_env.clone();
    inherit_env.extend(
        task.inherit_env
            .iter()
            .filter(|name| !dag.inherit_env.contains(name))
            .cloned(),
    );
    let handler = |handler: &Option<Handler>, name: &str| {
        handler
            .as_ref()
            .map(|handler| renderer.handler(handler, name, &env, &variables, &inherit_env))
            .transpose()
    };
    let on_success = handler(&task.on_success, "on_success")?;
    let on_failure = handler(&task.on_failure, "on_failure")?;
    let on_retry = handler(&task.on_retry, "on_retry")?;
    for conn_id in &task.connections {
        if ctx.run.catalog.connection(conn_id.as_str()).is_none() {
            return Err(RenderError {
                field: "connections".to_owned(),
                message: format!(
                    "no connection \"{conn_id}\" (add it with `updraft connections add`, or set \
                     {} where Updraft runs)",
                    connection_env_name(conn_id.as_str())
                ),
            });
        }
        let uri = Reference::Connection {
            conn_id: conn_id.to_string(),
            field: ConnectionField::Uri,
        };
        env.insert(connection_env_name(conn_id.as_str()), uri.to_string());
    }
    extend(&mut env, &variables);
    Ok(Rendered {
        command,
        env,
        inherit_env,
        working_dir,
        on_success,
        on_failure,
        on_retry,
    })
}

/// Renders the DAG handler for a run that ended in `state`: `on_success` for `success`,
/// `on_failure` for `failed`; `None` when the DAG has no such handler or the run has not ended.
/// The context is the run's: `task`, `ti` and `outputs` are undefined there.
pub fn render_dag_handler(
    dag: &Dag,
    state: DagRunState,
    run: &RunContext,
) -> Result<Option<RenderedHandler>, RenderError> {
    let Some(name) = HandlerName::of_run(state) else {
        return Ok(None);
    };
    let Some(handler) = dag.handler(name) else {
        return Ok(None);
    };
    let renderer = Renderer::new(|| run_value(run));
    let inherited: IndexMap<String, String> = dag
        .env
        .iter()
        .filter(|(name, _)| !handler.env.contains_key(*name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let mut env = IndexMap::new();
    renderer.env(&inherited, "", &mut env)?;
    renderer
        .handler(
            handler,
            name.as_str(),
            &env,
            &run_environment(run),
            &dag.inherit_env,
        )
        .map(Some)
}

/// Renders one string in `run`'s context (what a DAG handler's templates read): a notifier's
/// address or header. A secret it reads renders to its reference (`${{updraft var KEY}}`).
pub fn render_text(text: &str, run: &RunContext) -> Result<String, RenderError> {
    Renderer::new(|| run_value(run)).render(text, || "notify".to_owned())
}

/// The `UPDRAFT_*` variables of one try: the same strings the templates see.
pub fn environment(ctx: &Context) -> Vec<(&'static str, String)> {
    let mut variables = run_environment(ctx.run);
    variables.extend([
        ("UPDRAFT_TASK_ID", ctx.task_id.to_string()),
        ("UPDRAFT_TRY_NUMBER", ctx.try_number.to_string()),
    ]);
    variables
}

/// The `UPDRAFT_*` variables of a run, for what runs outside any task (DAG handlers).
pub fn run_environment(run: &RunContext) -> Vec<(&'static str, String)> {
    vec![
        ("UPDRAFT_DAG_ID", run.dag_id.to_string()),
        ("UPDRAFT_RUN_ID", run.run_id.clone()),
        ("UPDRAFT_RUN_TYPE", run.run_type.as_str().to_owned()),
        ("UPDRAFT_DS", ds(run.logical_date)),
        ("UPDRAFT_DS_NODASH", ds_nodash(run.logical_date)),
        ("UPDRAFT_TS", isoformat(run.logical_date)),
        ("UPDRAFT_LOGICAL_DATE", isoformat(run.logical_date)),
        (
            "UPDRAFT_DATA_INTERVAL_START",
            isoformat(run.data_interval_start),
        ),
        (
            "UPDRAFT_DATA_INTERVAL_END",
            isoformat(run.data_interval_end),
        ),
    ]
}

/// How the try a task's handler follows ended: what the handler is told on top of its rendered
/// environment (see [`try_handler_environment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryEnding<'a> {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    /// How its process ended, in words ("exited with code 3", "timed out after 1h").
    pub reason: &'a str,
    /// The end of its log as stored (masked).
    pub log_tail: &'a [u8],
}

/// What a task's handler is told of the try it follows: `UPDRAFT_STATE` (the try's state:
/// `success`, `up_for_retry` or `failed`), `UPDRAFT_EXIT_CODE` (empty when the process did
/// not exit by itself), `UPDRAFT_REASON`, `UPDRAFT_LOG_TAIL` (its log's last lines, NUL bytes
/// dropped), and `UPDRAFT_TASK_URL`, the try's page, when the web UI's address `base_url` is
/// known.
pub fn try_handler_environment(
    ending: &TryEnding<'_>,
    url: Option<String>,
) -> Vec<(&'static str, String)> {
    let tail = String::from_utf8_lossy(ending.log_tail).replace('\0', "");
    let mut variables = vec![
        ("UPDRAFT_STATE", ending.state.as_str().to_owned()),
        (
            "UPDRAFT_EXIT_CODE",
            ending
                .exit_code
                .map(|code| code.to_string())
                .unwrap_or_default(),
        ),
        ("UPDRAFT_REASON", ending.reason.to_owned()),
        ("UPDRAFT_LOG_TAIL", tail),
    ];
    variables.extend(url.map(|url| ("UPDRAFT_TASK_URL", url)));
    variables
}

/// What a DAG's handler is told of the run it follows: `UPDRAFT_STATE` (`success` or
/// `failed`) and `UPDRAFT_RUN_URL`, the run's page, when the web UI's address is known.
pub fn run_handler_environment(
    state: DagRunState,
    url: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut variables = vec![("UPDRAFT_STATE", state.as_str().to_owned())];
    variables.extend(url.map(|url| ("UPDRAFT_RUN_URL", url)));
    variables
}

/// A run's params: the DAG's declared defaults overridden by the conf's keys of the same name,
/// plus the conf's other keys (Airflow 2.10 with `dag_run_conf_overrides_params`). Every
/// declared param's value is checked against its type, enum and bounds; every problem is
/// returned, one message per param. A `null` conf is an empty one.
pub fn effective_params(
    dag: &Dag,
    conf: &serde_json::Value,
) -> Result<Map<String, serde_json::Value>, Vec<String>> {
    use serde_json::Value as J;
    let empty = Map::new();
    let conf = match conf {
        J::Object(conf) => conf,
        J::Null => &empty,
        J::Bool(_) | J::Number(_) | J::String(_) | J::Array(_) => {
            return Err(vec![format!("conf must be a JSON object, found {conf}")]);
        }
    };
    let mut params = Map::new();
    let mut problems = Vec::new();
    for (name, param) in &dag.params {
        match conf.get(name).or(param.default.as_ref()) {
            None => problems.push(format!("param \"{name}\" is required")),
            Some(value) => match param.check(value) {
                Ok(()) => {
                    params.insert(name.clone(), value.clone());
                }
                Err(message) => problems.push(format!("param \"{name}\": {message}")),
            },
        }
    }
    for (name, value) in conf {
        if !dag.params.contains_key(name) {
            params.insert(name.clone(), value.clone());
        }
    }
    if problems.is_empty() {
        Ok(params)
    } else {
        Err(problems)
    }
}

/// Renders the strings of one task or DAG handler against one context. The context's value is
/// built for the first templated string only: most commands and variables are plain.
struct Renderer<F> {
    make_context: F,
    context: OnceCell<Value>,
}

impl<F: Fn() -> Value> Renderer<F> {
    fn new(make_context: F) -> Self {
        Renderer {
            make_context,
            context: OnceCell::new(),
        }
    }

    /// `field` names the string in an error; it is built only then.
    fn render(&self, text: &str, field: impl FnOnce() -> String) -> Result<String, RenderError> {
        if !template::is_templated(text) {
            return Ok(text.to_owned());
        }
        let context = self.context.get_or_init(&self.make_context);
        engine()
            .render_str(text, context)
            .map_err(|error| RenderError {
                field: field(),
                message: describe(&error, text, context),
            })
    }

    fn command(&self, command: &Command, prefix: &str) -> Result<Command, RenderError> {
        Ok(match command {
            Command::Run(line) => Command::Run(self.render(line, || format!("{prefix}run"))?),
            Command::Exec(argv) => Command::Exec(
                argv.iter()
                    .enumerate()
                    .map(|(i, arg)| self.render(arg, || format!("{prefix}exec[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Renders `source`'s values into `into`, replacing values of the same names.
    fn env(
        &self,
        source: &IndexMap<String, String>,
        prefix: &str,
        into: &mut IndexMap<String, String>,
    ) -> Result<(), RenderError> {
        for (name, value) in source {
            let value = self.render(value, || format!("{prefix}env.{name}"))?;
            into.insert(name.clone(), value);
        }
        Ok(())
    }

    /// `env` is the rendered environment the handler inherits, before `variables` go on top.
    fn handler(
        &self,
        handler: &Handler,
        name: &str,
        env: &IndexMap<String, String>,
        variables: &[(&'static str, String)],
        inherit_env: &[String],
    ) -> Result<RenderedHandler, RenderError> {
        let prefix = format!("{name}.");
        let command = self.command(&handler.command, &prefix)?;
        let mut env = env.clone();
        self.env(&handler.env, &prefix, &mut env)?;
        extend(&mut env, variables);
        Ok(RenderedHandler {
            command,
            env,
            inherit_env: inherit_env.to_vec(),
        })
    }
}

/// `base` overlaid by `top`: a name in both keeps `base`'s position and takes `top`'s value.
fn overlay(
    base: &IndexMap<String, String>,
    top: &IndexMap<String, String>,
) -> IndexMap<String, String> {
    let mut env = base.clone();
    env.extend(top.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn extend(env: &mut IndexMap<String, String>, variables: &[(&'static str, String)]) {
    env.extend(
        variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone())),
    );
}

/// The engine every render shares: strict undefined, no autoescape, trailing newlines kept.
fn engine() -> &'static Environment<'static> {
    static ENGINE: OnceLock<Environment<'static>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env
    })
}

/// The template context of a run, without a task (what DAG handlers see).
fn run_value(run: &RunContext) -> Value {
    let at = run.logical_date;
    context! {
        ds => ds(at),
        ds_nodash => ds_nodash(at),
        ts => isoformat(at),
        ts_nodash => at.format("%Y%m%dT%H%M%S").to_string(),
        logical_date => DateTimeValue::value(at),
        data_interval_start => DateTimeValue::value(run.data_interval_start),
        data_interval_end => DateTimeValue::value(run.data_interval_end),
        run_id => run.run_id,
        dag_run => context! {
            dag_id => run.dag_id.as_str(),
            run_id => run.run_id,
            run_type => run.run_type.as_str(),
            conf => Value::from_serialize(&run.conf),
            logical_date => DateTimeValue::value(at),
            data_interval_start => DateTimeValue::value(run.data_interval_start),
            data_interval_end => DateTimeValue::value(run.data_interval_end),
        },
        params => Value::from_serialize(&run.params),
        dag => context! { dag_id => run.dag_id.as_str() },
        var => Value::from_object(Variables { catalog: run.catalog.clone(), json: None }),
        conn => Value::from_object(Connections(run.catalog.clone())),
        macros => context! {
            ds_add => Value::from_function(ds_add),
            ds_format => Value::from_function(ds_format),
        },
    }
}

/// The template context of one try of one task.
fn task_value(ctx: &Context) -> Value {
    context! {
        task => context! { task_id => ctx.task_id.as_str() },
        ti => context! {
            dag_id => ctx.run.dag_id.as_str(),
            task_id => ctx.task_id.as_str(),
            run_id => ctx.run.run_id,
            try_number => ctx.try_number,
        },
        outputs => Value::from_serialize(&ctx.outputs),
        ..run_value(ctx.run)
    }
}

/// An error's message; an undefined value is named with its path when the template reads it
/// by name, which is the usual case.
fn describe(error: &Error, text: &str, context: &Value) -> String {
    let mut message = error.kind().to_string();
    if let Some(detail) = error.detail() {
        write!(message, ": {detail}").unwrap();
    }
    if error.kind() == ErrorKind::UndefinedError
        && let Some((path, depth)) = undefined_variable(text, context)
    {
        write!(message, ": {path}").unwrap();
        let parts: Vec<&str> = path.split('.').collect();
        match parts[..] {
            ["task" | "ti" | "outputs", ..] if depth == 0 => {
                message.push_str(" (a DAG handler runs for the whole run: it has no task)");
            }
            ["outputs", task, name, ..] => {
                write!(message, " (task \"{task}\" wrote no output \"{name}\")").unwrap();
            }
            ["var", "value" | "json", key, ..] if depth == 2 => {
                write!(
                    message,
                    " (no variable \"{key}\": set it with `updraft variables set`, or write \
                     var.value.get('{key}', default))"
                )
                .unwrap();
            }
            ["conn", id, ..] if depth == 1 => {
                write!(
                    message,
                    " (no connection \"{id}\": add it with `updraft connections add`)"
                )
                .unwrap();
            }
            _ => {}
        }
    }
    if error.kind() == ErrorKind::InvalidOperation
        && let Some(negated) = negated_attribute(text)
    {
        let inner = &negated[1..];
        write!(
            message,
            " (`{negated}` negates `{}` before reading the rest: unlike Jinja2, a minus sign \
             binds tighter than `.` and `[]` here; write `-({inner})`)",
            inner.split(['.', '[']).next().unwrap_or(inner)
        )
        .unwrap();
    }
    if text.contains('\n')
        && let Some(line) = error.line()
    {
        write!(message, " (template line {line})").unwrap();
    }
    message
}

/// The first unary minus of `text` applied to a name followed by `.` or `[`, such as
/// `-params.days`: minijinja reads it as `(-params).days`, Jinja2 as `-(params.days)`.
fn negated_attribute(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '-' {
            continue;
        }
        // Unary when what comes before (spaces aside) opens an expression or is an operator.
        let before = chars[..i].iter().rev().find(|c| !c.is_whitespace());
        if !matches!(
            before,
            Some('(' | ',' | '{' | '[' | '=' | '+' | '*' | '/' | ':') | None
        ) {
            continue;
        }
        let start = i + 1;
        let name_end = start
            + chars[start..]
                .iter()
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .count();
        let starts_a_name = chars
            .get(start)
            .is_some_and(|c| c.is_alphabetic() || *c == '_');
        if starts_a_name && matches!(chars.get(name_end), Some('.' | '[')) {
            let end = name_end
                + chars[name_end..]
                    .iter()
                    .take_while(|c| {
                        c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '\'' | '"')
                    })
                    .count();
            return Some(chars[i..end].iter().collect());
        }
    }
    None
}

/// The first variable of `text` that is undefined in `context`, with the index of its first
/// undefined part. Only maps are looked into: a date-time's methods are not attributes.
fn undefined_variable(text: &str, context: &Value) -> Option<(String, usize)> {
    template::variables(text)
        .ok()?
        .into_iter()
        .find_map(|path| {
            let mut value = context.clone();
            for (depth, part) in path.split('.').enumerate() {
                if value.kind() != ValueKind::Map {
                    return None;
                }
                value = value.get_attr(part).ok()?;
                if value.is_undefined() {
                    return Some((path, depth));
                }
            }
            None
        })
}

fn ds(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn ds_nodash(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d").to_string()
}

/// Python's `datetime.isoformat()` of a UTC date-time: microseconds only when there are some.
fn isoformat(at: DateTime<Utc>) -> String {
    if at.timestamp_subsec_micros() == 0 {
        at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// `strftime` that reports a bad format instead of panicking as `to_string` would.
fn strftime(at: NaiveDateTime, format: &str) -> Result<String, Error> {
    let mut text = String::new();
    write!(text, "{}", at.format(format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid date format \"{format}\""),
        )
    })?;
    Ok(text)
}

/// Airflow's `macros.ds_add`: `ds` (`YYYY-MM-DD`) plus `days` days, as `YYYY-MM-DD`. As in
/// Airflow, adding 0 days returns `ds` unchecked.
fn ds_add(ds: &str, days: i64) -> Result<String, Error> {
    if days == 0 {
        return Ok(ds.to_owned());
    }
    let date = NaiveDate::parse_from_str(ds, "%Y-%m-%d").map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("ds_add: \"{ds}\" is not a YYYY-MM-DD date"),
        )
    })?;
    chrono::TimeDelta::try_days(days)
        .and_then(|delta| date.checked_add_signed(delta))
        .map(|date| date.format("%Y-%m-%d").to_string())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("ds_add: {ds} plus {days} days is out of range"),
            )
        })
}

/// Airflow's `macros.ds_format`: `ds` read with `input_format`, written with `output_format`.
/// An input format without a time of day reads midnight, as Python's `strptime`.
fn ds_format(ds: &str, input_format: &str, output_format: &str) -> Result<String, Error> {
    let at = NaiveDateTime::parse_from_str(ds, input_format)
        .or_else(|_| {
            NaiveDate::parse_from_str(ds, input_format).map(|d| d.and_time(Default::default()))
        })
        .map_err(|error| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("ds_format: \"{ds}\" does not match \"{input_format}\": {error}"),
            )
        })?;
    strftime(at, output_format)
}

/// Whether rendering `task` may read variables or connections: the scheduler then reads them
/// for its [`Catalog`] first. True for any template that mentions `var` or `conn`, and for a
/// task that declares `connections`.
pub fn reads_catalog(dag: &Dag, task: &Task) -> bool {
    let handler_mentions = |handler: &Option<Handler>| {
        handler.as_ref().is_some_and(|handler| {
            command_texts(&handler.command).any(mentions)
                || handler.env.values().any(|v| mentions(v))
        })
    };
    !task.connections.is_empty()
        || command_texts(&task.command).any(mentions)
        || task.working_dir.as_deref().is_some_and(mentions)
        || dag
            .env
            .values()
            .chain(task.env.values())
            .any(|v| mentions(v))
        || [&task.on_success, &task.on_failure, &task.on_retry]
            .into_iter()
            .any(handler_mentions)
}

/// Whether rendering `dag`'s handlers may read variables or connections.
pub fn dag_handlers_read_catalog(dag: &Dag) -> bool {
    [&dag.on_success, &dag.on_failure]
        .into_iter()
        .flatten()
        .any(|handler| {
            command_texts(&handler.command).any(mentions)
                || handler
                    .env
                    .values()
                    .chain(dag.env.values())
                    .any(|v| mentions(v))
        })
}

/// Whether a template may read `var` or `conn` (a cheap test: false positives cost one read).
fn mentions(text: &str) -> bool {
    template::is_templated(text) && (text.contains("var") || text.contains("conn"))
}

fn command_texts(command: &Command) -> Box<dyn Iterator<Item = &str> + '_> {
    match command {
        Command::Run(line) => Box::new(std::iter::once(line.as_str())),
        Command::Exec(argv) => Box::new(argv.iter().map(String::as_str)),
    }
}

/// `var` (with `json: None`), `var.value` and `var.json`: Airflow's variables in templates.
/// A plain value renders in place; a secret one as a reference the worker resolves. Both
/// accessors answer `.get(key, default)` as Airflow's do.
#[derive(Debug)]
struct Variables {
    catalog: Arc<Catalog>,
    json: Option<bool>,
}

impl Variables {
    /// Variable `key` as `var.value` (`json: false`) or `var.json` reads it; `None` when there
    /// is none.
    fn read(&self, key: &str, json: bool) -> Option<Result<Value, Error>> {
        let reference = || Reference::Variable {
            key: key.to_owned(),
            path: Vec::new(),
        };
        Some(match (self.catalog.variable(key)?, json) {
            (CatalogValue::Plain(text), false) => Ok(Value::from(text.clone())),
            (CatalogValue::Plain(text), true) => serde_json::from_str::<serde_json::Value>(text)
                .map(|json| Value::from_serialize(&json))
                .map_err(|error| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        format!("variable \"{key}\" is not JSON: {error}"),
                    )
                }),
            (CatalogValue::Secret, false) => Ok(Value::from(reference().to_string())),
            (CatalogValue::Secret, true) => Ok(Value::from_object(SecretJson(reference()))),
        })
    }
}

impl Object for Variables {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        match self.json {
            None => match key {
                "value" | "json" => Some(Value::from_object(Variables {
                    catalog: self.catalog.clone(),
                    json: Some(key == "json"),
                })),
                _ => None,
            },
            // An invalid JSON value reads as undefined here; `.get` says why.
            Some(json) => self.read(key, json)?.ok(),
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (Some(json), "get") = (self.json, method) else {
            return Err(Error::from(ErrorKind::UnknownMethod));
        };
        let (key, default): (&str, Option<Value>) = from_args(args)?;
        match (self.read(key, json), default) {
            (Some(value), _) => value,
            (None, Some(default)) => Ok(default),
            (None, None) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("no variable \"{key}\": set it with `updraft variables set`"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.json {
            None => "var",
            Some(false) => "var.value",
            Some(true) => "var.json",
        })
    }
}

/// A place inside a secret JSON value (`var.json.<secret>.a.b`,
/// `conn.<id>.extra_dejson.token`): renders as the reference to it.
#[derive(Debug)]
struct SecretJson(Reference);

impl Object for SecretJson {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let segment = match key.as_str() {
            Some(text) => text.to_owned(),
            None => key.as_i64()?.to_string(),
        };
        let mut reference = self.0.clone();
        match &mut reference {
            Reference::Variable { path, .. } => path.push(segment),
            Reference::Connection {
                field: ConnectionField::Extra(path),
                ..
            } => path.push(segment),
            Reference::Connection { .. } => return None,
        }
        Some(Value::from_object(SecretJson(reference)))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `conn`: Airflow's connections in templates, `conn.<id>.host` and the like.
#[derive(Debug)]
struct Connections(Arc<Catalog>);

impl Object for Connections {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let conn_id = key.as_str()?;
        self.0.connection(conn_id)?;
        Some(Value::from_object(ConnectionValue {
            catalog: self.0.clone(),
            conn_id: conn_id.to_owned(),
        }))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("conn")
    }
}

/// One connection: its type, host, port, login and schema in place; its password, extra and
/// URI (`get_uri()`) as references.
#[derive(Debug)]
struct ConnectionValue {
    catalog: Arc<Catalog>,
    conn_id: String,
}

impl ConnectionValue {
    fn reference(&self, field: ConnectionField) -> Reference {
        Reference::Connection {
            conn_id: self.conn_id.clone(),
            field,
        }
    }
}

impl Object for ConnectionValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let connection = self.catalog.connection(&self.conn_id)?;
        let text = |value: &Option<String>| Value::from(value.clone());
        Some(match key.as_str()? {
            "conn_id" => Value::from(self.conn_id.clone()),
            "conn_type" => Value::from(connection.conn_type.clone()),
            "host" => text(&connection.host),
            "port" => Value::from(connection.port),
            "login" => text(&connection.login),
            "schema" => text(&connection.schema),
            "password" => Value::from(self.reference(ConnectionField::Password).to_string()),
            "extra" => Value::from(
                self.reference(ConnectionField::Extra(Vec::new()))
                    .to_string(),
            ),
            "extra_dejson" => Value::from_object(SecretJson(
                self.reference(ConnectionField::Extra(Vec::new())),
            )),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let () = from_args(args)?;
        let field = match method {
            "get_uri" => ConnectionField::Uri,
            "get_password" => ConnectionField::Password,
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        Ok(Value::from(self.reference(field).to_string()))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.conn_id)
    }
}

/// A UTC date-time in templates: renders as `isoformat()`, as Airflow's date-times do, and
/// answers the attributes and methods Airflow users call on them.
#[derive(Debug)]
struct DateTimeValue(DateTime<Utc>);

impl DateTimeValue {
    fn value(at: DateTime<Utc>) -> Value {
        Value::from_object(DateTimeValue(at))
    }
}

impl Object for DateTimeValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let at = self.0;
        let part = match key.as_str()? {
            "year" => i64::from(at.year()),
            "month" => i64::from(at.month()),
            "day" => i64::from(at.day()),
            "hour" => i64::from(at.hour()),
            "minute" => i64::from(at.minute()),
            "second" => i64::from(at.second()),
            "microsecond" => i64::from(at.timestamp_subsec_micros()),
            _ => return None,
        };
        Some(Value::from(part))
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let (format,): (&str,) = from_args(args)?;
                strftime(self.0.naive_utc(), format).map(Value::from)
            }
            "isoformat" => {
                let () = from_args(args)?;
                Ok(Value::from(isoformat(self.0)))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&isoformat(self.0))
    }
}
