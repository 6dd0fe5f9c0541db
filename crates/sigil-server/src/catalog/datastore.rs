//! DataStore: where entries, agents, bundles and tokens live. Exactly one.
//! The catalog only reads its settings; `run` opens it.

use sigil_plugin::catalog::{Builtin, CountRule, PluginType};

use super::ServerContext;
use crate::plugin::datastore::sql;

/// How to open the datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataStoreSettings {
    /// `sqlite3`, `postgres`.
    pub database_type: String,
    /// The connection string, in the form the database type takes.
    pub connection_string: String,
}

/// The DataStore type.
pub static TYPE: PluginType<DataStoreSettings, ServerContext> = PluginType {
    kind: "DataStore",
    count: CountRule::EXACTLY_ONE,
    builtins: &[Builtin {
        name: sql::NAME,
        build: sql::build,
    }],
};
