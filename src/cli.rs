//! The command line, as clap reads it (phase one). `config.rs` turns the global flags into a
//! validated `Config` (phase two); `commands/` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read, check and inspect DAG files.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Create or check the metadata database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Measure workloads beside floors measured in the same run.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run [default: all].
    pub workloads: Vec<String>,
    /// Shrink every workload by this factor (0 < scale <= 1), e.g. 0.01 for a smoke run.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
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
        /// The moment to plan at: RFC 3339 (2024-03-01T12:00:00Z) or a date (UTC midnight)
        /// [default: now].
        #[arg(long)]
        now: Option<String>,
        /// How many future runs to print after the due ones.
        #[arg(long, default_value_t = 5)]
        count: usize,
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
}
