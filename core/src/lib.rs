//! updraft-core: the domain, pure. It owns DAG files (loading and validation into a petgraph
//! graph), schedules and data intervals, states and their legal moves, and trigger rules.
//!
//! Architecture invariant: this crate does no I/O beyond reading DAG files it is pointed at,
//! knows no database, no async runtime and no clock (`now` is always a parameter).

pub mod ids;
pub mod schedule;
pub mod state;
