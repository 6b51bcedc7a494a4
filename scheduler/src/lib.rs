//! updraft-scheduler: turns DAGs and the states in the metadata database into actions: which
//! runs to create, which task instances to schedule, skip or fail upstream, and what state a
//! run ends in.
//!
//! Architecture invariant: every decision is a pure function of its inputs (`now`, the DAG,
//! a snapshot of states), tested without a database or a clock; the loop that reads snapshots
//! and applies actions lives at the edge.

pub mod backfill;
pub mod deadlines;
pub mod instances;
pub mod readiness;
pub mod runs;
pub mod service;
pub mod step;
pub mod sync;
pub mod worklist;
