//! updraft-executor
