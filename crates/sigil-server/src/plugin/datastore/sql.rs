//! DataStore "sql": SQLite (embedded) or PostgreSQL through sqlx, with
//! SPIRE's option names. The catalog reads the settings; `run` opens the
//! database with `sigil_datastore::open`.

use std::sync::Arc;

use sigil_plugin::catalog::{PluginError, Problem, decode};

use crate::catalog::{DataStoreSettings, ServerContext};

/// The plugin name in config.
pub const NAME: &str = "sql";

/// SPIRE `sql` options sigil does not implement yet.
const UNSUPPORTED: &[&str] = &[
    "ro_connection_string",
    "root_ca_path",
    "client_cert_path",
    "client_key_path",
    "max_open_conns",
    "max_idle_conns",
    "conn_max_lifetime",
    "disable_migration",
    "log_sql",
];

/// Reads `database_type` and `connection_string`.
pub fn build(
    data: &serde_json::Value,
    _ctx: &ServerContext,
) -> Result<Arc<DataStoreSettings>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        database_type: String,
        connection_string: String,
    }
    let o: Options = decode("DataStore", NAME, data, UNSUPPORTED)?;
    for (option, value) in [
        ("database_type", &o.database_type),
        ("connection_string", &o.connection_string),
    ] {
        if value.is_empty() {
            return Err(PluginError::new(
                "DataStore",
                NAME,
                Problem::MissingOption(option.into()),
            ));
        }
    }
    Ok(Arc::new(DataStoreSettings {
        database_type: o.database_type,
        connection_string: o.connection_string,
    }))
}
