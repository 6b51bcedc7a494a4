//! updraft-core: the domain, pure. It owns DAG files (loading and validation into a petgraph
//! graph), schedules and data intervals, states and their legal moves, trigger rules and
//! template checks.
//!
//! Architecture invariant: this crate knows no database, no async runtime and no clock (`now`
//! is always a parameter). Its only I/O is reading the DAG files it is pointed at (`dag::load`).

pub mod actor;
pub mod backfill;
pub mod connection;
pub mod dag;
pub mod deadline;
pub mod hash;
pub mod ids;
pub mod links;
pub mod notify;
pub mod plan;
pub mod rate;
pub mod render;
pub mod retry;
pub mod schedule;
pub mod scope;
pub mod seal;
pub mod secret;
pub mod state;
pub mod suggest;
pub mod template;
pub mod text;
pub mod time;
pub mod worker_env;
