//! Keys kept in one JSON file, so a restarted server keeps its CA and a
//! restarted agent keeps its identity. The file is replaced atomically
//! (write, fsync, rename, fsync directory) with mode 0600, so a crash leaves
//! either the old or the new set of keys, never a torn file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sigil_crypto::key::{KeyType, Signer, SoftwareKey};
use tokio::sync::Mutex;

use super::{KeyManager, KeyManagerError};

/// The disk-backed key manager.
#[derive(Debug)]
pub struct DiskKeyManager {
    path: PathBuf,
    keys: Mutex<BTreeMap<String, (KeyType, Arc<SoftwareKey>)>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileFormat {
    keys: BTreeMap<String, StoredKey>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    key_type: String,
    pkcs8: String,
}

impl DiskKeyManager {
    /// Opens (or starts) the key file at `path`.
    pub fn open(path: PathBuf) -> Result<Self, KeyManagerError> {
        let storage_err = |reason: String| KeyManagerError::Storage {
            path: path.display().to_string(),
            reason,
        };
        // A write a crash cut short leaves a copy of the keys beside the file.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            sigil_cli::secure_fs::remove_stale_temp_files(dir)
                .map_err(|e| storage_err(e.to_string()))?;
        }
        let mut keys = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: FileFormat = serde_json::from_slice(&bytes)
                    .map_err(|e| storage_err(format!("not a sigil key file: {e}")))?;
                for (id, stored) in file.keys {
                    let key_type: KeyType = stored
                        .key_type
                        .parse()
                        .map_err(|e| storage_err(format!("key {id:?}: {e}")))?;
                    let der = STANDARD
                        .decode(stored.pkcs8.as_bytes())
                        .map_err(|e| storage_err(format!("key {id:?}: {e}")))?;
                    let key = SoftwareKey::from_pkcs8_der(&der)
                        .map_err(|e| storage_err(format!("key {id:?}: {e}")))?;
                    keys.insert(id, (key_type, Arc::new(key)));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage_err(e.to_string())),
        }
        Ok(DiskKeyManager {
            path,
            keys: Mutex::new(keys),
        })
    }

    /// Where the keys are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn persist(
        &self,
        keys: &BTreeMap<String, (KeyType, Arc<SoftwareKey>)>,
    ) -> Result<(), KeyManagerError> {
        let file = FileFormat {
            keys: keys
                .iter()
                .map(|(id, (kt, key))| {
                    (
                        id.clone(),
                        StoredKey {
                            key_type: kt.to_string(),
                            pkcs8: STANDARD.encode(key.to_pkcs8_der()),
                        },
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| self.storage(e.to_string()))?;
        sigil_cli::secure_fs::write_private_atomic(&self.path, &bytes)
            .map_err(|e| self.storage(e.to_string()))
    }

    fn storage(&self, reason: String) -> KeyManagerError {
        KeyManagerError::Storage {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

#[async_trait]
impl KeyManager for DiskKeyManager {
    fn name(&self) -> &'static str {
        "disk"
    }

    async fn generate_key(
        &self,
        id: &str,
        key_type: KeyType,
    ) -> Result<Arc<dyn Signer>, KeyManagerError> {
        let key = Arc::new(super::memory::generate(id, key_type).await?);
        let mut keys = self.keys.lock().await;
        let mut next = keys.clone();
        next.insert(id.to_owned(), (key_type, key.clone()));
        self.persist(&next)?;
        *keys = next;
        Ok(key)
    }

    async fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError> {
        Ok(self
            .keys
            .lock()
            .await
            .get(id)
            .map(|(_, k)| k.clone() as Arc<dyn Signer>))
    }

    async fn get_keys(&self) -> Result<Vec<(String, Arc<dyn Signer>)>, KeyManagerError> {
        Ok(self
            .keys
            .lock()
            .await
            .iter()
            .map(|(id, (_, k))| (id.clone(), k.clone() as Arc<dyn Signer>))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn disk_key_manager_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_owned();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::keymanager::conformance::run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = base.join(format!("keys-{n}.json"));
            async move { Arc::new(DiskKeyManager::open(path).unwrap()) as Arc<dyn KeyManager> }
        })
        .await;
    }

    #[tokio::test]
    async fn disk_keys_survive_reopen_and_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let km = DiskKeyManager::open(path.clone()).unwrap();
        let a = km.generate_key("x509-CA-A", KeyType::EcP256).await.unwrap();
        let b = km
            .generate_key("JWT-Signer-A", KeyType::EcP384)
            .await
            .unwrap();
        drop(km);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let km = DiskKeyManager::open(path).unwrap();
        let a2 = km.get_key("x509-CA-A").await.unwrap().unwrap();
        let b2 = km.get_key("JWT-Signer-A").await.unwrap().unwrap();
        assert_eq!(a.public_key_der(), a2.public_key_der());
        assert_eq!(b.public_key_der(), b2.public_key_der());
        assert_eq!(b2.key_type(), KeyType::EcP384);
    }

    #[test]
    fn corrupt_key_file_is_a_precise_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = DiskKeyManager::open(path).unwrap_err();
        assert!(err.to_string().contains("not a sigil key file"), "{err}");
    }
}
