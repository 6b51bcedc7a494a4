//! One module per command group. Each `run` returns the process exit code.

pub mod bench;
pub mod dags;
pub mod db;
