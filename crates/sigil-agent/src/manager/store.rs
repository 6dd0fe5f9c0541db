//! What the agent keeps in `data_dir` between runs.
//!
//! - `agent_svid.der`: the agent SVID chain, concatenated DER (SPIRE's name
//!   and format).
//! - `bundle.der`: the trust domain's X.509 authorities, concatenated DER
//!   (SPIRE's name and format).
//! - `svid_cache/` (mode 0700, sigil's own): what a restarted agent needs
//!   to serve at once, even while the server is down, written
//!   incrementally: `bundles.json` holds the full bundle (JWT authorities
//!   too) and the federated bundles; each workload X509-SVID, with its
//!   private key, is one file (mode 0600) named after its entry
//!   (`<sha-256 of the entry ID, hex>.svid`), written when that SVID
//!   changes and removed when the agent drops it. A change to one SVID
//!   rewrites one small file, never the whole cache.
//! - `svid_cache.json`: the single-file cache of earlier versions, read
//!   once when `svid_cache/` does not exist yet, then removed.
//!
//! Every write is atomic (temporary file, fsync, rename), so a kill at any
//! point leaves each file whole, old or new; temporary files a kill left
//! are removed when the cache is loaded. A corrupt file is only a lost
//! part of the cache: it is reported and skipped. The agent's private key
//! is never written here; it lives in the KeyManager.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sigil_spiffe::{Bundle, Selector, SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cache::X509SvidRecord;

/// The agent SVID file.
pub const AGENT_SVID_FILE: &str = "agent_svid.der";
/// The bundle file.
pub const BUNDLE_FILE: &str = crate::config::BUNDLE_FILE;
/// The workload SVID cache directory.
pub const SVID_CACHE_DIR: &str = "svid_cache";
/// The file in [`SVID_CACHE_DIR`] holding the bundles.
pub const SVID_CACHE_BUNDLES_FILE: &str = "bundles.json";
/// The extension of the per-entry SVID files in [`SVID_CACHE_DIR`].
pub const SVID_FILE_EXTENSION: &str = "svid";
/// The single-file SVID cache of earlier versions, read for upgrade.
pub const LEGACY_SVID_CACHE_FILE: &str = "svid_cache.json";

/// File in `data_dir` recording facts about the agent SVID's attestation
/// (today only whether the agent may re-attest by itself).
pub const AGENT_STATE_FILE: &str = "agent_state.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct AgentState {
    reattestable: bool,
}

const CACHE_VERSION: u32 = 1;

/// Why a stored file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be written safely.
    #[error(transparent)]
    Write(sigil_cli::secure_fs::SecureFsError),
    /// The file exists but its content is unusable.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A workload SVID with what the manager needs to decide when to renew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSvid {
    /// What workloads get, shared with the published snapshots.
    pub record: std::sync::Arc<X509SvidRecord>,
    /// Leaf `notBefore`, unix seconds.
    pub issued_at: i64,
    /// Revision of the entry it was issued for.
    pub revision_number: i64,
    /// DNS names of the entry it was issued for.
    pub dns_names: Vec<String>,
    /// X509-SVID TTL of the entry it was issued for.
    pub x509_svid_ttl: i32,
}

/// What the SVID cache held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedCache {
    /// Our full bundle, if stored.
    pub bundle: Option<Bundle>,
    /// The federated bundles, ordered by trust domain.
    pub federated: Vec<Bundle>,
    /// The SVIDs not yet expired.
    pub svids: Vec<CachedSvid>,
    /// True when this came from the single-file cache of earlier versions:
    /// nothing of it is in [`SVID_CACHE_DIR`] yet.
    pub legacy: bool,
}

/// The `data_dir` files of one agent.
#[derive(Debug, Clone)]
pub struct DataDir {
    dir: PathBuf,
}

impl DataDir {
    /// Files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DataDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stored agent SVID chain, if any.
    pub fn load_agent_svid(&self) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        read_der_certs(&self.dir.join(AGENT_SVID_FILE))
    }

    /// Stores the agent SVID chain.
    pub fn store_agent_svid(&self, chain: &[Vec<u8>]) -> Result<(), StoreError> {
        write(&self.dir.join(AGENT_SVID_FILE), &chain.concat())
    }

    /// Whether the stored agent SVID came from an attestation the server
    /// lets the agent repeat by itself (`false` when never recorded).
    pub fn load_reattestable(&self) -> Result<bool, StoreError> {
        let path = self.dir.join(AGENT_STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let state: AgentState =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            })?;
        Ok(state.reattestable)
    }

    /// Records whether the agent may re-attest by itself.
    pub fn store_reattestable(&self, reattestable: bool) -> Result<(), StoreError> {
        let path = self.dir.join(AGENT_STATE_FILE);
        let bytes =
            serde_json::to_vec(&AgentState { reattestable }).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write(&path, &bytes)
    }

    /// The stored X.509 authorities, if any.
    pub fn load_bundle(&self) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        read_der_certs(&self.dir.join(BUNDLE_FILE))
    }

    /// Stores the X.509 authorities.
    pub fn store_bundle(&self, authorities: &[Vec<u8>]) -> Result<(), StoreError> {
        write(&self.dir.join(BUNDLE_FILE), &authorities.concat())
    }

    /// The SVID cache directory.
    pub fn svid_cache_dir(&self) -> PathBuf {
        self.dir.join(SVID_CACHE_DIR)
    }

    /// Loads the workload SVID cache for `td`: the full bundle (if stored),
    /// the federated bundles and the SVIDs not yet expired at `now`. Reads
    /// the single-file cache of earlier versions when there is no cache
    /// directory yet. Files a kill left half-written are removed; a corrupt
    /// SVID file is skipped (with a warning); an unreadable bundles file or
    /// one for another trust domain fails the whole load.
    pub fn load_svid_cache(&self, td: &TrustDomain, now: i64) -> Result<LoadedCache, StoreError> {
        let dir = self.svid_cache_dir();
        if !dir.is_dir() {
            return self.load_legacy_svid_cache(td, now);
        }
        sigil_cli::secure_fs::remove_stale_temp_files(&dir).map_err(StoreError::Write)?;
        let bundles_path = dir.join(SVID_CACHE_BUNDLES_FILE);
        let (bundle, federated) = match std::fs::read(&bundles_path) {
            Ok(bytes) => {
                let file: BundlesFile =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: bundles_path.clone(),
                        reason: format!("not an SVID cache bundles file: {e}"),
                    })?;
                parse_bundles(
                    &bundles_path,
                    td,
                    file.version,
                    &file.trust_domain,
                    file.bundle,
                    file.federated_bundles,
                )?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: bundles_path,
                    source,
                });
            }
        };
        let listing = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut svids = Vec::new();
        for item in listing {
            let item = item.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SVID_FILE_EXTENSION) {
                continue;
            }
            let loaded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<StoredSvid>(&bytes).map_err(|e| e.to_string())
                })
                .and_then(StoredSvid::into_cached);
            match loaded {
                Ok(svid) if svid.record.expires_at > now => svids.push(svid),
                Ok(_) => {
                    // Expired: nothing to serve; the file goes now.
                    let _ = std::fs::remove_file(&path);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "Ignoring an unreadable cached X509-SVID");
                }
            }
        }
        svids.sort_by(|a, b| a.record.entry_id.cmp(&b.record.entry_id));
        Ok(LoadedCache {
            bundle,
            federated,
            svids,
            legacy: false,
        })
    }

    fn load_legacy_svid_cache(
        &self,
        td: &TrustDomain,
        now: i64,
    ) -> Result<LoadedCache, StoreError> {
        let path = self.dir.join(LEGACY_SVID_CACHE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LoadedCache::default());
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: CacheFile = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("not an SVID cache: {e}")))?;
        let (bundle, federated) = parse_bundles(
            &path,
            td,
            file.version,
            &file.trust_domain,
            file.bundle,
            file.federated_bundles,
        )?;
        let mut svids = Vec::with_capacity(file.svids.len());
        for s in file.svids {
            let entry_id = s.entry_id.clone();
            let svid = s
                .into_cached()
                .map_err(|e| corrupt(format!("entry {entry_id:?}: {e}")))?;
            if svid.record.expires_at > now {
                svids.push(svid);
            }
        }
        Ok(LoadedCache {
            bundle,
            federated,
            svids,
            legacy: true,
        })
    }

    /// Stores the bundles of the SVID cache.
    pub fn store_svid_cache_bundles(
        &self,
        td: &TrustDomain,
        bundle: Option<&Bundle>,
        federated: &[&Bundle],
    ) -> Result<(), StoreError> {
        let jwks = |b: &Bundle| String::from_utf8_lossy(&b.to_jwks()).into_owned();
        let file = BundlesFile {
            version: CACHE_VERSION,
            trust_domain: td.name().to_owned(),
            bundle: bundle.map(jwks),
            federated_bundles: federated
                .iter()
                .map(|b| StoredBundle {
                    trust_domain: b.trust_domain.name().to_owned(),
                    bundle: jwks(b),
                })
                .collect(),
        };
        let path = self.svid_cache_dir().join(SVID_CACHE_BUNDLES_FILE);
        let bytes = serde_json::to_vec(&file).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&path, &bytes)
    }

    /// Stores one workload SVID (mode 0600), replacing the one of its
    /// entry.
    pub fn store_svid(&self, svid: &CachedSvid) -> Result<(), StoreError> {
        let path = self.svid_path(&svid.record.entry_id);
        let bytes = serde_json::to_vec(&StoredSvid::from_cached(svid)).map_err(|e| {
            StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        write(&path, &bytes)
    }

    /// Removes the stored SVID of `entry_id`, if any.
    pub fn remove_svid(&self, entry_id: &str) -> Result<(), StoreError> {
        let path = self.svid_path(entry_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Removes every stored SVID but those of `keep` (entry IDs): what a
    /// cache that could not be read, or was dropped while the agent was
    /// down, left behind.
    pub fn remove_svids_except(
        &self,
        keep: &std::collections::HashSet<&str>,
    ) -> Result<usize, StoreError> {
        let dir = self.svid_cache_dir();
        let wanted: std::collections::HashSet<PathBuf> =
            keep.iter().map(|id| self.svid_path(id)).collect();
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        };
        let mut removed = 0;
        for item in listing.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) == Some(SVID_FILE_EXTENSION)
                && !wanted.contains(&path)
            {
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::Io { path, source }),
                }
            }
        }
        Ok(removed)
    }

    /// Removes the single-file cache of earlier versions, once its content
    /// is in [`SVID_CACHE_DIR`].
    pub fn remove_legacy_svid_cache(&self) -> Result<(), StoreError> {
        let path = self.dir.join(LEGACY_SVID_CACHE_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The file of `entry_id`'s SVID: entry IDs may hold any character, a
    /// digest of them is a safe file name of fixed length.
    fn svid_path(&self, entry_id: &str) -> PathBuf {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(entry_id.as_bytes());
        self.svid_cache_dir()
            .join(format!("{}.{SVID_FILE_EXTENSION}", hex::encode(digest)))
    }
}

/// The bundles of a cache file, checked against our trust domain.
fn parse_bundles(
    path: &Path,
    td: &TrustDomain,
    version: u32,
    trust_domain: &str,
    bundle: Option<String>,
    federated_bundles: Vec<StoredBundle>,
) -> Result<(Option<Bundle>, Vec<Bundle>), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if version != CACHE_VERSION {
        return Err(corrupt(format!("unknown version {version}")));
    }
    if trust_domain != td.name() {
        return Err(corrupt(format!(
            "cache is for trust domain {trust_domain:?}, the agent is in {:?}",
            td.name()
        )));
    }
    let bundle = match bundle {
        Some(jwks) => Some(
            Bundle::parse_jwks(td, jwks.as_bytes()).map_err(|e| corrupt(format!("bundle: {e}")))?,
        ),
        None => None,
    };
    let mut federated = Vec::with_capacity(federated_bundles.len());
    for b in federated_bundles {
        let ftd = TrustDomain::new(&b.trust_domain)
            .map_err(|e| corrupt(format!("federated bundle {:?}: {e}", b.trust_domain)))?;
        federated.push(
            Bundle::parse_jwks(&ftd, b.bundle.as_bytes())
                .map_err(|e| corrupt(format!("federated bundle {:?}: {e}", b.trust_domain)))?,
        );
    }
    Ok((bundle, federated))
}

/// Splits concatenated DER certificates.
pub fn split_der_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (after, _) = X509Certificate::from_der(rest)
            .map_err(|e| format!("certificate #{}: {e}", out.len()))?;
        let len = rest.len() - after.len();
        out.push(rest[..len].to_vec());
        rest = after;
    }
    Ok(out)
}

fn read_der_certs(path: &Path) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let certs = split_der_certs(&bytes).map_err(|reason| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    })?;
    if certs.is_empty() {
        return Ok(None);
    }
    Ok(Some(certs))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    sigil_cli::secure_fs::write_private_atomic(path, bytes).map_err(StoreError::Write)
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    trust_domain: String,
    /// The bundle as a SPIFFE bundle document.
    #[serde(default)]
    bundle: Option<String>,
    /// Federated bundles; absent in files written before federation.
    #[serde(default)]
    federated_bundles: Vec<StoredBundle>,
    svids: Vec<StoredSvid>,
}

/// `svid_cache/bundles.json`.
#[derive(Serialize, Deserialize)]
struct BundlesFile {
    version: u32,
    trust_domain: String,
    /// The bundle as a SPIFFE bundle document.
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    federated_bundles: Vec<StoredBundle>,
}

#[derive(Serialize, Deserialize)]
struct StoredBundle {
    trust_domain: String,
    /// A SPIFFE bundle document.
    bundle: String,
}

#[derive(Serialize, Deserialize)]
struct StoredSvid {
    entry_id: String,
    spiffe_id: String,
    selectors: Vec<String>,
    #[serde(default)]
    hint: String,
    /// Base64 DER, leaf first.
    chain: Vec<String>,
    /// Base64 PKCS#8.
    key_pkcs8: String,
    expires_at: i64,
    issued_at: i64,
    revision_number: i64,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    x509_svid_ttl: i32,
    /// Trust domain names.
    #[serde(default)]
    federates_with: Vec<String>,
}

impl StoredSvid {
    fn from_cached(s: &CachedSvid) -> Self {
        StoredSvid {
            entry_id: s.record.entry_id.clone(),
            spiffe_id: s.record.spiffe_id.to_string(),
            selectors: s.record.selectors.iter().map(ToString::to_string).collect(),
            hint: s.record.hint.clone(),
            chain: s.record.chain.iter().map(|c| STANDARD.encode(c)).collect(),
            key_pkcs8: STANDARD.encode(&s.record.key_pkcs8),
            expires_at: s.record.expires_at,
            issued_at: s.issued_at,
            revision_number: s.revision_number,
            dns_names: s.dns_names.clone(),
            x509_svid_ttl: s.x509_svid_ttl,
            federates_with: s
                .record
                .federates_with
                .iter()
                .map(|t| t.name().to_owned())
                .collect(),
        }
    }

    fn into_cached(self) -> Result<CachedSvid, String> {
        let spiffe_id = SpiffeId::parse(&self.spiffe_id).map_err(|e| e.to_string())?;
        let selectors = self
            .selectors
            .iter()
            .map(|s| Selector::parse(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let chain = self
            .chain
            .iter()
            .map(|c| STANDARD.decode(c).map_err(|e| format!("chain: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = chain.first().ok_or("empty chain")?;
        let leaf_id = sigil_crypto::x509::leaf_spiffe_id(leaf).map_err(|e| e.to_string())?;
        if leaf_id != spiffe_id {
            return Err(format!("certificate is for {leaf_id}, not {spiffe_id}"));
        }
        let key_pkcs8 = STANDARD
            .decode(&self.key_pkcs8)
            .map_err(|e| format!("key: {e}"))?;
        let federates_with = self
            .federates_with
            .iter()
            .map(|t| TrustDomain::new(t).map_err(|e| format!("federates_with: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CachedSvid {
            record: std::sync::Arc::new(X509SvidRecord {
                entry_id: self.entry_id,
                spiffe_id,
                selectors,
                hint: self.hint,
                chain,
                key_pkcs8,
                expires_at: self.expires_at,
                federates_with,
            }),
            issued_at: self.issued_at,
            revision_number: self.revision_number,
            dns_names: self.dns_names,
            x509_svid_ttl: self.x509_svid_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testing::TestCa;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn der_files_round_trip_and_split() {
        let ca = TestCa::new("example.org");
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        assert_eq!(dd.load_bundle().unwrap(), None);
        let (leaf, _) = ca.leaf("/a", 0, 3600);
        let chain = vec![leaf, ca.cert.clone()];
        dd.store_agent_svid(&chain).unwrap();
        dd.store_bundle(std::slice::from_ref(&ca.cert)).unwrap();
        assert_eq!(dd.load_agent_svid().unwrap(), Some(chain));
        assert_eq!(dd.load_bundle().unwrap(), Some(vec![ca.cert.clone()]));
        std::fs::write(dir.path().join(BUNDLE_FILE), b"\x30\x03\x02").unwrap();
        assert!(matches!(dd.load_bundle(), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn legacy_svid_cache_without_federation_fields_still_loads() {
        let td = TrustDomain::new("example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEGACY_SVID_CACHE_FILE),
            br#"{"version":1,"trust_domain":"example.org","svids":[]}"#,
        )
        .unwrap();
        let loaded = DataDir::new(dir.path()).load_svid_cache(&td, 0).unwrap();
        assert!(loaded.federated.is_empty());
        assert!(loaded.legacy);
    }

    #[test]
    fn legacy_single_file_cache_is_read_for_upgrade() {
        let ca = TestCa::new("example.org");
        let td = TrustDomain::new("example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let now = sigil_plugin::clock::unix(std::time::SystemTime::now());
        let live = ca.cached_svid("e1", "/web", now - 10, now + 3600);
        let mut bundle = Bundle::new(td.clone());
        bundle.x509_authorities.push(ca.cert.clone());
        let file = CacheFile {
            version: CACHE_VERSION,
            trust_domain: td.name().to_owned(),
            bundle: Some(String::from_utf8(bundle.to_jwks()).unwrap()),
            federated_bundles: vec![],
            svids: vec![StoredSvid::from_cached(&live)],
        };
        std::fs::write(
            dir.path().join(LEGACY_SVID_CACHE_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let dd = DataDir::new(dir.path());
        let loaded = dd.load_svid_cache(&td, now).unwrap();
        assert!(loaded.legacy);
        assert_eq!(loaded.svids, vec![live.clone()]);

        // Once the directory exists, it is what counts.
        dd.store_svid_cache_bundles(&td, Some(&bundle), &[])
            .unwrap();
        dd.store_svid(&live).unwrap();
        dd.remove_legacy_svid_cache().unwrap();
        let loaded = dd.load_svid_cache(&td, now).unwrap();
        assert!(!loaded.legacy);
        assert_eq!(loaded.svids, vec![live]);
    }

    #[test]
    fn svid_cache_round_trips_one_file_per_svid_with_mode_0600_and_drops_expired() {
        let ca = TestCa::new("example.org");
        let td = TrustDomain::new("example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        let now = sigil_plugin::clock::unix(std::time::SystemTime::now());
        let mut live = ca.cached_svid("e1", "/web", now - 10, now + 3600);
        std::sync::Arc::make_mut(&mut live.record).federates_with =
            vec![TrustDomain::new("partner.org").unwrap()];
        let other = ca.cached_svid("e/../3", "/other", now - 10, now + 3600);
        let partner = TestCa::new("partner.org");
        let mut federated = Bundle::new(partner.td.clone());
        federated.x509_authorities.push(partner.cert.clone());
        let dead = ca.cached_svid("e2", "/old", now - 7200, now - 3600);
        let mut bundle = Bundle::new(td.clone());
        bundle.x509_authorities.push(ca.cert.clone());
        dd.store_svid_cache_bundles(&td, Some(&bundle), &[&federated])
            .unwrap();
        for s in [&live, &dead, &other] {
            dd.store_svid(s).unwrap();
        }
        let files: Vec<_> = std::fs::read_dir(dd.svid_cache_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(files.len(), 4, "{files:?}");
        for f in &files {
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", f.display());
        }
        let loaded = dd.load_svid_cache(&td, now).unwrap();
        assert_eq!(
            loaded.bundle.unwrap().x509_authorities,
            vec![ca.cert.clone()]
        );
        assert_eq!(loaded.federated, vec![federated]);
        // In entry ID order.
        assert_eq!(loaded.svids, vec![other.clone(), live.clone()]);

        // One SVID changes: one file is rewritten; one goes: one removed.
        dd.remove_svid("e/../3").unwrap();
        let renewed = ca.cached_svid("e1", "/web", now - 5, now + 7200);
        dd.store_svid(&renewed).unwrap();
        let loaded = dd.load_svid_cache(&td, now).unwrap();
        assert_eq!(loaded.svids, vec![renewed.clone()]);

        let other_td = TrustDomain::new("other.org").unwrap();
        assert!(matches!(
            dd.load_svid_cache(&other_td, now),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_torn_or_corrupt_svid_file_loses_only_that_svid() {
        let ca = TestCa::new("example.org");
        let td = TrustDomain::new("example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path());
        let now = sigil_plugin::clock::unix(std::time::SystemTime::now());
        let a = ca.cached_svid("a", "/a", now - 10, now + 3600);
        let b = ca.cached_svid("b", "/b", now - 10, now + 3600);
        dd.store_svid(&a).unwrap();
        dd.store_svid(&b).unwrap();
        std::fs::write(dd.svid_path("b"), b"{\"entry_id\":").unwrap();
        // What a kill between creating and renaming a temporary file leaves.
        let tmp = dd.svid_cache_dir().join(".sigil-write-x.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        let loaded = dd.load_svid_cache(&td, now).unwrap();
        assert_eq!(loaded.svids, vec![a.clone()]);
        assert_eq!(loaded.bundle, None);

        // Files of SVIDs the agent no longer holds go on request.
        dd.store_svid(&b).unwrap();
        let removed = dd
            .remove_svids_except(&["a"].into_iter().collect())
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(dd.load_svid_cache(&td, now).unwrap().svids, vec![a]);

        std::fs::write(dd.svid_cache_dir().join(SVID_CACHE_BUNDLES_FILE), b"{").unwrap();
        assert!(dd.load_svid_cache(&td, now).is_err());
    }
}
