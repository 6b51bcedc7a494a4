//! updraft-scheduler
