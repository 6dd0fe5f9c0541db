//! Keys held only in memory: gone when the process exits. SPIRE's default for
//! tests and dev; with it a restarted server mints a new CA.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use tokio::sync::RwLock;

use super::{KeyManager, KeyManagerError};

/// The in-memory key manager.
#[derive(Debug, Default)]
pub struct MemoryKeyManager {
    keys: RwLock<BTreeMap<String, Arc<dyn Signer>>>,
}

#[async_trait]
impl KeyManager for MemoryKeyManager {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn keys_survive_restart(&self) -> bool {
        false
    }

    async fn generate_key(
        &self,
        id: &str,
        key_type: KeyType,
    ) -> Result<Arc<dyn Signer>, KeyManagerError> {
        let key = generate(id, key_type).await?;
        let signer: Arc<dyn Signer> = Arc::new(key);
        self.keys
            .write()
            .await
            .insert(id.to_owned(), signer.clone());
        Ok(signer)
    }

    async fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError> {
        Ok(self.keys.read().await.get(id).cloned())
    }

    async fn get_keys(&self) -> Result<Vec<(String, Arc<dyn Signer>)>, KeyManagerError> {
        Ok(self
            .keys
            .read()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Generates a software key off the async runtime (RSA generation is slow).
pub(crate) async fn generate(id: &str, key_type: KeyType) -> Result<SoftwareKey, KeyManagerError> {
    let id_owned = id.to_owned();
    tokio::task::spawn_blocking(move || SoftwareKey::generate(key_type))
        .await
        .map_err(|e| KeyManagerError::Key {
            id: id_owned.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| KeyManagerError::Key {
            id: id_owned,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_key_manager_passes_conformance() {
        crate::keymanager::conformance::run_all(|| async {
            Arc::new(MemoryKeyManager::default()) as Arc<dyn KeyManager>
        })
        .await;
    }
}
