//! updraft-executor: the worker. It claims queued task instances, runs them as child processes
//! in their own process groups, and records their logs, outputs and outcomes.

mod ends;
mod handler;
pub mod name;
pub mod worker;
