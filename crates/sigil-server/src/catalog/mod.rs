//! The server's plugin catalog (SPIRE's `pkg/server/catalog`): one file per
//! plugin type, each with its count rule and its built-ins. [`Catalog::load`]
//! is the one place a `plugins { }` section becomes running plugins; both
//! `validate` and `run` go through it.
//!
//! This module never names a plugin: names live in the plugins' own files
//! under [`crate::plugin`], and each type file lists them once.

pub mod bundlepublisher;
pub mod datastore;
pub mod keymanager;
pub mod nodeattestor;
pub mod upstreamauthority;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sigil_cli::PluginDecl;
use sigil_datastore::DataStore;
use sigil_plugin::bundlepublisher::BundlePublisher;
use sigil_plugin::catalog::{CatalogError, CountRule, Declaration, UnsupportedType, check_counts};
use sigil_plugin::clock::Clock;
use sigil_plugin::keymanager::KeyManager;
use sigil_plugin::nodeattestor::{JoinTokens, NodeAttestorError, ServerNodeAttestor};
use sigil_plugin::upstreamauthority::UpstreamAuthority;
use sigil_spiffe::TrustDomain;

pub use datastore::DataStoreSettings;

/// What the server hands its plugins when building them. A plugin takes
/// only what it needs from here.
#[derive(Debug, Clone)]
pub struct ServerContext {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// The server's `data_dir`.
    pub data_dir: PathBuf,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Join tokens, for the `join_token` node attestor.
    pub join_tokens: Arc<dyn JoinTokens>,
}

/// Join tokens in the datastore. The catalog is loaded before the
/// datastore it describes is opened, so `run` connects the datastore here
/// afterwards; until then (and in `validate`) looking a token up fails.
#[derive(Default)]
pub struct DataStoreJoinTokens(OnceLock<Arc<dyn DataStore>>);

impl std::fmt::Debug for DataStoreJoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStoreJoinTokens")
            .field("connected", &self.0.get().is_some())
            .finish()
    }
}

impl DataStoreJoinTokens {
    /// Connects the opened datastore (only the first call counts).
    pub fn connect(&self, ds: Arc<dyn DataStore>) {
        let _ = self.0.set(ds);
    }
}

#[async_trait::async_trait]
impl JoinTokens for DataStoreJoinTokens {
    async fn expiry(&self, token: &str) -> Result<Option<i64>, NodeAttestorError> {
        let ds = self
            .0
            .get()
            .ok_or_else(|| NodeAttestorError::Internal("the datastore is not open".into()))?;
        ds.get_join_token(token)
            .await
            .map(|t| t.map(|t| t.expires_at))
            .map_err(|e| NodeAttestorError::Internal(format!("datastore: {e}")))
    }
}

/// SPIRE server plugin types sigil does not implement yet.
const UNSUPPORTED: &[UnsupportedType] = &[
    UnsupportedType("Notifier"),
    UnsupportedType("CredentialComposer"),
];

/// Every plugin the configuration declares, built.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The datastore's settings (opened by `run`, not here).
    pub datastore: Arc<DataStoreSettings>,
    /// The KeyManager.
    pub key_manager: Arc<dyn KeyManager>,
    /// The node attestors, one per attestation type.
    pub node_attestors: Vec<Arc<dyn ServerNodeAttestor>>,
    /// The UpstreamAuthority, if any.
    pub upstream_authority: Option<Arc<dyn UpstreamAuthority>>,
    /// The bundle publishers.
    pub bundle_publishers: Vec<Arc<dyn BundlePublisher>>,
}

impl Catalog {
    /// Checks the declared plugins against every type's count rule, then
    /// builds each one.
    pub fn load(plugins: &[PluginDecl], ctx: &ServerContext) -> Result<Catalog, CatalogError> {
        let declared: Vec<Declaration<'_>> = plugins
            .iter()
            .map(|p| Declaration {
                kind: &p.kind,
                name: &p.name,
                data: &p.data,
            })
            .collect();
        check_counts(&declared, &rules(), UNSUPPORTED)?;
        let datastore = first(datastore::TYPE.build_all(&declared, ctx)?);
        let key_manager = first(keymanager::TYPE.build_all(&declared, ctx)?);
        let (Some(datastore), Some(key_manager)) = (datastore, key_manager) else {
            unreachable!("check_counts requires exactly one DataStore and one KeyManager")
        };
        Ok(Catalog {
            datastore,
            key_manager,
            node_attestors: nodeattestor::TYPE.build_all(&declared, ctx)?,
            upstream_authority: first(upstreamauthority::TYPE.build_all(&declared, ctx)?),
            bundle_publishers: bundlepublisher::TYPE.build_all(&declared, ctx)?,
        })
    }

    /// The node attestor for an attestation data type.
    pub fn node_attestor(&self, attestation_type: &str) -> Option<&Arc<dyn ServerNodeAttestor>> {
        self.node_attestors
            .iter()
            .find(|a| a.name() == attestation_type)
    }
}

fn first<T: ?Sized>(v: Vec<Arc<T>>) -> Option<Arc<T>> {
    v.into_iter().next()
}

/// Every type's count rule.
fn rules() -> [(&'static str, CountRule); 5] {
    [
        datastore::TYPE.rule(),
        keymanager::TYPE.rule(),
        nodeattestor::TYPE.rule(),
        upstreamauthority::TYPE.rule(),
        bundlepublisher::TYPE.rule(),
    ]
}

#[cfg(test)]
pub(crate) mod tests;
