//! The plugin mechanism shared by the server and the agent: the catalog
//! machinery (count rules, built-in lists, typed plugin errors), the plugin
//! traits both sides or both halves of a pair need, their conformance
//! suites, and the built-in key managers.
//!
//! Each side owns its catalog (`sigil_server::catalog`,
//! `sigil_agent::catalog`): one file per plugin type listing its built-ins.
//! A plugin sees only its own `plugin_data` and the context its side hands
//! it, never the whole configuration.
#![forbid(unsafe_code)]

pub mod bundlepublisher;
pub mod catalog;
pub mod clock;
pub mod keymanager;
pub mod nodeattestor;
pub mod upstreamauthority;

pub use catalog::{CatalogError, CountError, CountRule, PluginError, Problem};
pub use clock::{Clock, ManualClock, SystemClock};
pub use keymanager::{KeyManager, KeyManagerError};
