//! Built-in DataStore plugins.

pub mod sql;
