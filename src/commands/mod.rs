//! One module per command group. Each returns the process exit code. A command module uses no
//! other command module: what they share lives beside `commands/` (`term`, `args`, `lookup`,
//! `wiring`, `embedded`, `accounts`).

pub mod backfill;
pub mod connections;
pub mod dags;
pub mod db;
pub mod pools;
pub mod runs;
pub mod secrets;
pub mod serve;
pub mod tasks;
pub mod users;
pub mod variables;
pub mod workers;
