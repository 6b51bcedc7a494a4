//! Schedules and data intervals (DESIGN §4).
