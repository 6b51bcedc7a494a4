//! The command line, as clap reads it (phase one). `config.rs` turns the global flags into a
//! validated `Config` (phase two); `commands/` does the work.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use updraft_core::backfill::Reprocess;
use updraft_core::ids::{BackfillId, ConnectionId, DagId, VariableKey};
use updraft_core::time::WrittenTime;
use updraft_executor::worker;

use crate::args;

#[derive(Debug, Parser)]
#[command(
    name = "updraft",
    version,
    about = "An Airflow-style DAG workflow orchestrator"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Folder of DAG files.
    #[arg(
        long,
        global = true,
        env = "UPDRAFT_DAGS_FOLDER",
        default_value = "dags"
    )]
    pub dags_folder: PathBuf,
    /// Metadata database: postgres://user@host/db or sqlite:PATH [default: sqlite under
    /// $UPDRAFT_HOME].
    #[arg(
        long,
        global = true,
        env = "UPDRAFT_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Where Updraft keeps its SQLite database and logs [default: ~/.updraft].
    #[arg(long, global = true, env = "UPDRAFT_HOME")]
    pub home: Option<PathBuf>,
    /// Timezone of schedules that name none (IANA name).
    #[arg(
        long,
        global = true,
        env = "UPDRAFT_DEFAULT_TIMEZONE",
        default_value = "UTC"
    )]
    pub default_timezone: String,
    /// A folder of secrets mounted beside Updraft: `variables/<key>` and `connections/<id>`,
    /// one file each, read before the environment and the database.
    #[arg(long, global = true, env = "UPDRAFT_SECRETS_FOLDER")]
    pub secrets_folder: Option<PathBuf>,
    /// Names that make a variable or an environment value secret, comma-separated, besides
    /// Airflow's (password, secret, token, api_key, private_key, ...).
    #[arg(
        long,
        global = true,
        env = "UPDRAFT_SENSITIVE_NAMES",
        value_delimiter = ','
    )]
    pub sensitive_names: Vec<String>,
    /// The web UI's address as its users reach it (e.g. https://updraft.example.com), for the
    /// links handlers are given (UPDRAFT_TASK_URL, UPDRAFT_RUN_URL); `standalone` uses its own
    /// address when none is given.
    #[arg(long, global = true, env = "UPDRAFT_BASE_URL", value_parser = args::base_url)]
    pub base_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything on one machine: migrate SQLite, then run the scheduler, workers and web
    /// server on the DAGs folder.
    Standalone(StandaloneArgs),
    /// Run the scheduler: sync DAG files, create runs, queue ready tasks.
    Scheduler(SchedulerArgs),
    /// Run a worker: claim queued task instances and run them.
    Worker(WorkerArgs),
    /// Run the web server: the UI and the JSON API (log in with a user of `updraft users`).
    Webserver(WebserverArgs),
    /// Read, check, trigger and test DAGs.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Inspect DAG runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Follow, pause, resume and cancel backfills (create one with `dags backfill`).
    #[command(subcommand)]
    Backfills(BackfillsCommand),
    /// Test, clear and read the logs of task instances.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Manage pools: named slots that limit how many task instances run at once.
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// See the workers: host, queues, load, heartbeat.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Manage variables: key/value pairs that templates read as {{ var.value.<key> }}.
    #[command(subcommand)]
    Variables(VariablesCommand),
    /// Manage connections: how tasks reach outside systems ({{ conn.<id>.host }}).
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Make and rotate the key that seals secrets in the metadata database.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Create or check the metadata database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Manage the users of the web UI and API, and their API tokens.
    #[command(subcommand)]
    Users(UsersCommand),
}

/// Flags of the scheduler, in `updraft scheduler` and `updraft standalone`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// A running try whose worker has not heartbeaten for this long is failed or retried.
    #[arg(long, env = "UPDRAFT_ZOMBIE_THRESHOLD", default_value = "30s", value_parser = args::duration)]
    pub zombie_threshold: std::time::Duration,
    /// The longest wait between two scheduling passes when nothing wakes the scheduler
    /// [default: 1s; every process's changes wake it, by LISTEN/NOTIFY on Postgres and by a
    /// socket beside the file on SQLite].
    #[arg(long, env = "UPDRAFT_POLL_INTERVAL", value_parser = args::duration)]
    pub poll_interval: Option<std::time::Duration>,
    /// Once a day, delete runs that ended longer ago than this, with their task instances,
    /// tries, logs and outputs, and older events, as `db clean` does (e.g. 90d) [default: keep
    /// everything].
    #[arg(long, env = "UPDRAFT_RETENTION", value_parser = args::duration)]
    pub retention: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Address the web server binds to.
    #[arg(long, env = "UPDRAFT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the web server; 0 takes a free one.
    #[arg(long, env = "UPDRAFT_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Task instances run at once by the in-process worker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Variables of this process's environment that every task gets, comma-separated (besides
    /// PATH, HOME, LANG, TZ, USER and the DAG's inherit_env); never UPDRAFT_*.
    #[arg(long, env = "UPDRAFT_INHERIT_ENV", value_delimiter = ',', value_parser = args::inherited_name)]
    pub inherit_env: Vec<String>,
    /// The most of a try's output its stored log keeps; the log says where it was cut.
    #[arg(long, env = "UPDRAFT_MAX_LOG_SIZE", default_value_t = worker::MAX_LOG_BYTES, value_parser = args::size)]
    pub max_log_size: u64,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
}

#[derive(Debug, Args)]
pub struct WebserverArgs {
    /// Address to bind to.
    #[arg(long, env = "UPDRAFT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port; 0 takes a free one.
    #[arg(long, env = "UPDRAFT_PORT", default_value_t = 8080)]
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queues to take task instances from, comma-separated (a task's `queue:`).
    #[arg(long, value_delimiter = ',', default_value = "default", value_parser = queue_name)]
    pub queues: Vec<String>,
    /// Task instances run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// The worker's name: unique among the workers, stable across restarts (a restarted worker
    /// ends the tries its previous life left running) [default: the host name].
    #[arg(long, value_parser = worker_name)]
    pub name: Option<String>,
    /// On SIGTERM or Ctrl-C the worker claims nothing more and waits this long for its running
    /// tries; then it kills them (each gets its `kill_grace`), records them failed or up for
    /// retry, and exits.
    #[arg(long, env = "UPDRAFT_SHUTDOWN_TIMEOUT", default_value = "5m", value_parser = args::duration)]
    pub shutdown_timeout: std::time::Duration,
    /// Variables of this process's environment that every task gets, comma-separated (besides
    /// PATH, HOME, LANG, TZ, USER and the DAG's inherit_env); never UPDRAFT_*.
    #[arg(long, env = "UPDRAFT_INHERIT_ENV", value_delimiter = ',', value_parser = args::inherited_name)]
    pub inherit_env: Vec<String>,
    /// The most of a try's output its stored log keeps; the log says where it was cut.
    #[arg(long, env = "UPDRAFT_MAX_LOG_SIZE", default_value_t = worker::MAX_LOG_BYTES, value_parser = args::size)]
    pub max_log_size: u64,
}

/// A queue name of `--queues`: not empty.
fn queue_name(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("a queue name cannot be empty (write e.g. --queues default,gpu)".to_owned()),
        name => Ok(name.to_owned()),
    }
}

/// A worker name of `--name`: 1 to 250 characters, none of them blank or a control character.
fn worker_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 250 {
        return Err("a worker name has 1 to 250 characters".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a worker name cannot contain spaces or control characters".to_owned());
    }
    Ok(text.to_owned())
}

#[derive(Debug, Subcommand)]
pub enum DagsCommand {
    /// List the DAGs of the DAGs folder.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one DAG: schedule, tasks and dependencies.
    Show {
        dag_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Check DAG files (default: the DAGs folder); one line per problem, exit 1 on any.
    Validate { paths: Vec<PathBuf> },
    /// Print the JSON Schema of the DAG file format, for editors.
    Schema,
    /// Print the runs the scheduler would create at --now on an empty database, then the
    /// next --count runs.
    NextRuns {
        dag_id: String,
        /// The moment to plan at: RFC 3339 (2024-03-01T12:00:00Z), or a date or date-time in
        /// the DAG's timezone [default: now].
        #[arg(long, value_parser = args::time)]
        now: Option<WrittenTime>,
        /// How many future runs to print after the due ones.
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
    /// Create a manual run; prints its run id.
    Trigger {
        dag_id: String,
        /// The run's conf: a JSON object; its keys override the DAG's params.
        #[arg(long, value_parser = args::conf)]
        conf: Option<serde_json::Value>,
        /// The run's logical date: RFC 3339, or a date (midnight) or date-time in the DAG's
        /// timezone [default: now].
        #[arg(long, value_parser = args::time)]
        logical_date: Option<WrittenTime>,
        /// Follow the run until it ends; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Stop creating scheduled runs of a DAG.
    Pause { dag_id: String },
    /// Create scheduled runs of a DAG again.
    Unpause { dag_id: String },
    /// Run one whole DAG run in this process (no scheduler needed), task logs on stdout.
    Test {
        dag_id: String,
        /// RFC 3339, or a date (midnight) or date-time in the DAG's timezone [default: now].
        #[arg(long, value_parser = args::time)]
        logical_date: Option<WrittenTime>,
        /// The run's conf: a JSON object.
        #[arg(long, value_parser = args::conf)]
        conf: Option<serde_json::Value>,
    },
    /// Run a DAG over a range of past dates: one backfill run per schedule interval.
    ///
    /// Each interval whose logical date lies in [--from, --to] (in the DAG's timezone) gets a
    /// run of type backfill, run by the scheduler, or by this process when no scheduler is
    /// running. Exit 0 when every run succeeded, 1 when any failed, 2 on bad input.
    Backfill(BackfillArgs),
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    pub dag_id: String,
    /// First logical date: YYYY-MM-DD (midnight in the DAG's timezone) or RFC 3339.
    #[arg(long)]
    pub from: String,
    /// Last logical date (inclusive): YYYY-MM-DD or RFC 3339.
    #[arg(long)]
    pub to: String,
    /// Dates that already have a run: none skips them, failed re-runs the failed ones, all
    /// re-runs every finished one (by clearing it).
    #[arg(
        long,
        default_value = "none",
        value_parser = PossibleValuesParser::new(["none", "failed", "all"])
            .map(|mode| mode.parse::<Reprocess>().expect("a possible value")),
    )]
    pub reprocess: Reprocess,
    /// Runs of this backfill running at once [default: the DAG's max_active_runs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_active_runs: Option<u32>,
    /// Start with the newest date.
    #[arg(long)]
    pub run_backwards: bool,
    /// Every run's conf: a JSON object; its keys override the DAG's params.
    #[arg(long, value_parser = args::conf)]
    pub conf: Option<serde_json::Value>,
    /// Print each interval and whether it would be created, re-run or skipped, and why;
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation; allow more than 10,000 runs.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackfillsCommand {
    /// Backfills, newest first, with their progress.
    List {
        /// Only the backfills of this DAG.
        #[arg(long)]
        dag: Option<String>,
        /// How many backfills to show.
        #[arg(long, default_value_t = 25)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One backfill: range, options, progress and its runs.
    Show {
        id: BackfillId,
        #[arg(long)]
        json: bool,
    },
    /// Start no more of its runs (running ones finish) until it is resumed.
    Pause { id: BackfillId },
    /// Start its runs again.
    Resume { id: BackfillId },
    /// End it: its queued runs fail, its running ones finish.
    Cancel { id: BackfillId },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// A DAG's runs, newest first: state, dates, duration.
    List {
        dag_id: String,
        /// How many runs to show.
        #[arg(long, default_value_t = 25)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One run and each of its task instances.
    Show {
        dag_id: String,
        run_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Run one task now, in this process; nothing is recorded.
    Test {
        dag_id: String,
        task_id: String,
        /// RFC 3339, or a date (midnight) or date-time in the DAG's timezone [default: now].
        #[arg(long, value_parser = args::time)]
        logical_date: Option<WrittenTime>,
    },
    /// Reset task instances so that they run again with a fresh retry budget.
    Clear {
        dag_id: String,
        /// Only this task (repeatable) [default: every task].
        #[arg(long = "task")]
        tasks: Vec<String>,
        /// Also the tasks downstream of those.
        #[arg(long)]
        downstream: bool,
        /// Also the tasks upstream of those.
        #[arg(long)]
        upstream: bool,
        /// Only runs with a logical date at or after this: RFC 3339, or a date (midnight) or
        /// date-time in the DAG's timezone.
        #[arg(long, value_parser = args::time)]
        from: Option<WrittenTime>,
        /// Only runs with a logical date at or before this; the same forms.
        #[arg(long, value_parser = args::time)]
        to: Option<WrittenTime>,
        /// Only task instances that failed or were upstream_failed.
        #[arg(long)]
        only_failed: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Print the log of a try (default: the latest).
    Logs {
        dag_id: String,
        run_id: String,
        task_id: String,
        #[arg(long = "try")]
        try_number: Option<i32>,
        /// Keep printing until the try ends.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a pool or change its slots.
    Set {
        name: String,
        slots: i32,
        #[arg(long, default_value = "")]
        description: String,
        /// At most so many tries of the pool's tasks start per period: 10/m, 2/s, 100/h or
        /// 5/30s (Celery's rate_limit); `none` removes it. Left out, the pool keeps its own.
        #[arg(long, value_name = "RATE")]
        rate_limit: Option<String>,
    },
    /// Delete a pool (not default_pool).
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum VariablesCommand {
    /// Create or replace a variable. VALUE `-` reads it from stdin (keeps it out of the shell's
    /// history).
    Set {
        key: VariableKey,
        value: String,
        /// Store it sealed and mask it in logs [default: when the key is a sensitive name].
        #[arg(long, conflicts_with = "not_secret")]
        secret: bool,
        /// Store it in clear even though its key is a sensitive name.
        #[arg(long)]
        not_secret: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Print a variable's value.
    Get {
        key: VariableKey,
    },
    /// List the variables (secret values as ***).
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        key: VariableKey,
    },
    /// Set the variables of a JSON file, all or none: {"key": value, ...} (Airflow's format;
    /// a value that is not a string is stored as its JSON).
    Import {
        file: PathBuf,
    },
    /// Write every variable, secret ones in clear, as JSON to FILE (`-`: stdout).
    Export {
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Create or replace a connection, from a URI or from fields.
    Add {
        conn_id: ConnectionId,
        /// Airflow's URI form: postgres://user:pass@host:5432/db?sslmode=require
        #[arg(long, conflicts_with_all = ["conn_type", "host", "port", "login", "password", "schema", "extra"])]
        uri: Option<String>,
        #[arg(long = "type", required_unless_present = "uri")]
        conn_type: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        login: Option<String>,
        /// `-` reads it from stdin.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        schema: Option<String>,
        /// A JSON object.
        #[arg(long)]
        extra: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Print a connection's fields and URI, password included.
    Get {
        conn_id: ConnectionId,
        #[arg(long)]
        json: bool,
    },
    /// List the connections (without passwords or extras).
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        conn_id: ConnectionId,
    },
    /// Set the connections of a JSON file, all or none: {"id": "uri" or {"conn_type": ...,
    /// "host": ..., ...}, ...} (Airflow's format).
    Import {
        file: PathBuf,
    },
    /// Write every connection, passwords in clear, as JSON to FILE (`-`: stdout).
    Export {
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print a new random key for UPDRAFT_SECRET_KEY.
    NewKey,
    /// Seal every stored secret again with the first key of UPDRAFT_SECRET_KEY (or the key
    /// file), opening each with whichever listed key sealed it. Rotate by setting
    /// UPDRAFT_SECRET_KEY=new,old, running this, then dropping the old key.
    RotateKey,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is asked for, or read from stdin with --password-stdin.
    Create {
        username: String,
        #[arg(long, value_parser = PossibleValuesParser::new(["admin", "viewer"]))]
        role: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Every user and their role.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a user, their sessions and their API tokens.
    Delete { username: String },
    /// Create an API token for a user that never expires and print it (once: only its hash is
    /// kept); `users tokens create` names it and sets an expiry. Scripts send it as
    /// `Authorization: Bearer TOKEN`.
    Token { username: String },
    /// List, create and revoke API tokens one at a time.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Every API token (or a user's), newest first: id, user, name, created, expires, status.
    List {
        username: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create an API token for a user and print it (once: only its hash is kept).
    Create {
        username: String,
        /// What the token is for, shown in listings.
        #[arg(long, default_value = "")]
        name: String,
        /// Refuse the token after this long (e.g. 30d, 12h) [default: never].
        #[arg(long, value_parser = args::duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Revoke an API token by its id (from `list`): it is refused from now on.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Every registered worker: host, queues, running tries out of its concurrency, state
    /// (`lost` when it stopped heartbeating without stopping) and heartbeat age.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the migrations the database lacks.
    Migrate,
    /// Check that the database is reachable and its schema is current (exit 1 if not).
    Check,
    /// Delete finished runs that ended longer ago than --older-than, with their task
    /// instances, tries, logs and outputs, and older events; each DAG's latest scheduled run
    /// and the runs of unfinished backfills stay (Airflow's `db clean`).
    Clean {
        /// e.g. 90d
        #[arg(long, value_parser = args::duration)]
        older_than: std::time::Duration,
        /// Only this DAG's runs and events.
        #[arg(long = "dag")]
        dag_id: Option<DagId>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}
