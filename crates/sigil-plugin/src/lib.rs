//! Plugin traits shared by the server and the agent, the built-in key
//! managers both sides use, and the rules for how many of each plugin type a
//! configuration may declare.
//!
//! A plugin sees only its own `plugin_data`, never the whole configuration.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod clock;
pub mod keymanager;
pub mod upstreamauthority;

pub use catalog::{CountRule, check_counts};
pub use clock::{Clock, ManualClock, SystemClock};
pub use keymanager::{KeyManager, KeyManagerError};
