//! The `updraft` binary: parses the command line and wires the parts together. No logic of its
//! own lives here beyond presenting results.

mod args;
mod cli;
mod commands;
mod config;
mod term;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UPDRAFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            let message = format!("{error:#}");
            eprintln!("error: {}", updraft_core::text::lines(&message));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = Config::from_args(&cli.global)?;
    match cli.command {
        Command::Standalone(args) => commands::serve::standalone(&config, args),
        Command::Scheduler(args) => commands::serve::scheduler(&config, args),
        Command::Worker(args) => commands::serve::worker(&config, args),
        Command::Webserver(args) => commands::serve::webserver(&config, args),
        Command::Dags(command) => commands::dags::run(&config, command),
        Command::Runs(command) => commands::runs::run(&config, command),
        Command::Backfills(command) => commands::backfill::run(&config, command),
        Command::Tasks(command) => commands::tasks::run(&config, command),
        Command::Pools(command) => commands::pools::run(&config, command),
        Command::Workers(command) => commands::workers::run(&config, command),
        Command::Db(command) => commands::db::run(&config, command),
        Command::Users(command) => commands::users::run(&config, command),
        Command::Bench(args) => commands::bench::run(args),
    }
}
