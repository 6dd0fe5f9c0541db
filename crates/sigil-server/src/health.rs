//! What "ready" means for the server, for the `health_checks` listener
//! ([`sigil_telemetry::health`]): as in SPIRE, the datastore answers and
//! the CA can sign (an active X.509 CA and JWT key, neither expired).

use std::sync::Arc;

use futures::future::BoxFuture;
use sigil_datastore::DataStore;
use sigil_plugin::clock::Clock;
use sigil_telemetry::health::{Check, Readiness};

use crate::ca::CaManager;

/// `datastore`: a cheap query answers.
pub struct DataStoreCheck {
    /// The server's datastore.
    pub ds: Arc<dyn DataStore>,
}

impl Check for DataStoreCheck {
    fn name(&self) -> &'static str {
        "datastore"
    }

    fn check(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            match self.ds.latest_entry_event_id().await {
                Ok(_) => Readiness::Ready,
                Err(e) => Readiness::NotReady(format!("datastore query failed: {e}")),
            }
        })
    }
}

/// `ca`: the CA has an active, unexpired X.509 CA and JWT key.
pub struct CaCheck {
    /// The server's CA.
    pub ca: Arc<CaManager>,
    /// The time source expiry is compared with.
    pub clock: Arc<dyn Clock>,
}

impl Check for CaCheck {
    fn name(&self) -> &'static str {
        "ca"
    }

    fn check(&self) -> BoxFuture<'_, Readiness> {
        Box::pin(async move {
            let now = self.clock.now();
            match (self.ca.x509_ca().await, self.ca.jwt_key().await) {
                (Ok(x), Ok(j)) if x.not_after > now && j.not_after > now => Readiness::Ready,
                (Ok(_), Ok(_)) => {
                    Readiness::NotReady("the active X.509 CA or JWT key has expired".into())
                }
                (Err(e), _) | (_, Err(e)) => Readiness::NotReady(e.to_string()),
            }
        })
    }
}
