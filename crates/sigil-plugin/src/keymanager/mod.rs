//! KeyManager: where the server's CA and JWT keys and the agent's own key live.
//!
//! Implementations hand out [`Signer`]s; callers never see private key bytes,
//! so an HSM-backed manager fits the same trait. Every implementation must
//! pass [`conformance::run_all`].

use std::sync::Arc;

use async_trait::async_trait;
use sigil_crypto::key::{KeyType, Signer};

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

/// Builds a built-in key manager from its config block. `role` picks the
/// option names: the server's disk manager takes `keys_path` (a file), the
/// agent's takes `directory`, as in SPIRE.
pub fn build(
    name: &str,
    data: &serde_json::Value,
    role: Role,
) -> Result<Arc<dyn KeyManager>, KeyManagerError> {
    match name {
        "memory" => {
            reject_unknown(name_static(name), data, &[])?;
            Ok(Arc::new(MemoryKeyManager::default()))
        }
        "disk" => {
            let key = match role {
                Role::Server => "keys_path",
                Role::Agent => "directory",
            };
            reject_unknown("disk", data, &[key])?;
            let path =
                data.get(key)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| KeyManagerError::Config {
                        plugin: "disk",
                        reason: format!("{key:?} must be set"),
                    })?;
            let path = match role {
                Role::Server => std::path::PathBuf::from(path),
                Role::Agent => std::path::Path::new(path).join("keys.json"),
            };
            Ok(Arc::new(DiskKeyManager::open(path)?))
        }
        other => Err(KeyManagerError::Config {
            plugin: "catalog",
            reason: format!("unknown KeyManager plugin {other:?} (built-in: memory, disk)"),
        }),
    }
}

/// Which side of the system a plugin is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// sigil-server.
    Server,
    /// sigil-agent.
    Agent,
}

fn name_static(name: &str) -> &'static str {
    match name {
        "memory" => "memory",
        "disk" => "disk",
        _ => "unknown",
    }
}

fn reject_unknown(
    plugin: &'static str,
    data: &serde_json::Value,
    allowed: &[&str],
) -> Result<(), KeyManagerError> {
    if let Some(k) = data
        .as_object()
        .and_then(|obj| obj.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(KeyManagerError::Config {
            plugin,
            reason: format!("unknown option {k:?} in plugin_data"),
        });
    }
    Ok(())
}
