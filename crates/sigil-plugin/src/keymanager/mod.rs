//! KeyManager: where the server's CA and JWT keys and the agent's own key live.
//!
//! Implementations hand out [`Signer`]s; callers never see private key bytes,
//! so an HSM-backed manager fits the same trait. Every implementation must
//! pass [`conformance::run_all`].

use std::sync::Arc;

use async_trait::async_trait;
use sigil_crypto::key::{KeyType, Signer};

use crate::catalog::{PluginError, Problem, decode};

pub mod conformance;
pub mod disk;
pub mod memory;

pub use disk::DiskKeyManager;
pub use memory::MemoryKeyManager;

/// What can go wrong managing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyManagerError {
    /// `plugin_data` is wrong (names the option).
    #[error("KeyManager {plugin:?}: {reason}")]
    Config {
        /// The plugin name.
        plugin: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or use failed.
    #[error("key {id:?}: {reason}")]
    Key {
        /// The key ID.
        id: String,
        /// What failed.
        reason: String,
    },
    /// Reading or writing key storage failed.
    #[error("key storage {path}: {reason}")]
    Storage {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Creates and holds named private keys.
#[async_trait]
pub trait KeyManager: Send + Sync + std::fmt::Debug {
    /// The plugin name (`memory`, `disk`).
    fn name(&self) -> &'static str;

    /// Whether keys outlive the process (a restarted agent or server finds
    /// them again). Managers that keep keys in memory say no.
    fn keys_survive_restart(&self) -> bool {
        true
    }

    /// Generates a new key under `id`, replacing any key with that ID, and
    /// returns its signer. Durable managers persist it before returning.
    async fn generate_key(
        &self,
        id: &str,
        key_type: KeyType,
    ) -> Result<Arc<dyn Signer>, KeyManagerError>;

    /// The key stored under `id`, if any.
    async fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError>;

    /// All keys, ordered by ID.
    async fn get_keys(&self) -> Result<Vec<(String, Arc<dyn Signer>)>, KeyManagerError>;
}

/// The plugin type name in config files.
pub const KIND: &str = "KeyManager";

/// Built-in `memory`: keys live in memory and die with the process. No
/// options.
pub fn build_memory<C>(
    data: &serde_json::Value,
    _ctx: &C,
) -> Result<Arc<dyn KeyManager>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {}
    let Options {} = decode(KIND, "memory", data, &[])?;
    Ok(Arc::new(MemoryKeyManager::default()))
}

/// Built-in `disk` as the server configures it: `keys_path`, the JSON file
/// holding every key.
pub fn build_disk_server<C>(
    data: &serde_json::Value,
    _ctx: &C,
) -> Result<Arc<dyn KeyManager>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        keys_path: String,
    }
    let o: Options = decode(KIND, "disk", data, &[])?;
    open_disk(std::path::PathBuf::from(non_empty(
        "keys_path",
        o.keys_path,
    )?))
}

/// Built-in `disk` as the agent configures it: `directory`, where
/// `keys.json` lives.
pub fn build_disk_agent<C>(
    data: &serde_json::Value,
    _ctx: &C,
) -> Result<Arc<dyn KeyManager>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        directory: String,
    }
    let o: Options = decode(KIND, "disk", data, &[])?;
    open_disk(std::path::Path::new(&non_empty("directory", o.directory)?).join("keys.json"))
}

fn non_empty(option: &str, v: String) -> Result<String, PluginError> {
    if v.is_empty() {
        return Err(PluginError::new(
            KIND,
            "disk",
            Problem::MissingOption(option.to_owned()),
        ));
    }
    Ok(v)
}

fn open_disk(path: std::path::PathBuf) -> Result<Arc<dyn KeyManager>, PluginError> {
    DiskKeyManager::open(path)
        .map(|km| Arc::new(km) as Arc<dyn KeyManager>)
        .map_err(|e| PluginError::new(KIND, "disk", Problem::Load(e.to_string())))
}
