//! The `StreamSecrets` protocol as a state machine with no I/O: requests
//! from the proxy and new views of the caller go in, responses to send come
//! out. Its rules are SPIRE's:
//!
//! - Every change of what the caller may receive bumps the version
//!   (`"1"`, `"2"`, ...); once the proxy has asked for something, each
//!   bump sends the secrets of its last request again.
//! - A request is answered only when it is the first or its resource names
//!   differ (as a set) from the previous request's; a request that only
//!   acknowledges, or rejects (NACK: `error_detail`, or a version other
//!   than the one last sent), is logged and answered with nothing, so a
//!   proxy that cannot apply a secret is not sent the same secret in a
//!   loop. A NACK that changes the names is answered like any change.
//! - After the first response, a request whose `response_nonce` is not
//!   the last sent nonce is stale and ignored entirely.
//! - A request without `node` inherits the last one seen, so the proxy's
//!   version and metadata keep choosing the validation context form.

use std::collections::HashSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::resources::{self, WorkloadView};
use super::{SdsConfig, SdsError};

/// One `StreamSecrets` stream's state.
#[derive(Debug)]
pub(crate) struct StreamState {
    config: Arc<SdsConfig>,
    version: u64,
    last_nonce: Option<String>,
    last_node: Option<Node>,
    last_request: Option<DiscoveryRequest>,
    view: Option<WorkloadView>,
}

impl StreamState {
    pub(crate) fn new(config: Arc<SdsConfig>) -> StreamState {
        StreamState {
            config,
            version: 0,
            last_nonce: None,
            last_node: None,
            last_request: None,
            view: None,
        }
    }

    /// The version last sent (or to be sent next).
    pub(crate) fn version(&self) -> String {
        self.version.to_string()
    }

    /// A request from the proxy; the response to send, if any.
    pub(crate) fn on_request(
        &mut self,
        mut request: DiscoveryRequest,
    ) -> Result<Option<DiscoveryResponse>, SdsError> {
        tracing::debug!(
            resource_names = ?request.resource_names,
            version_info = %request.version_info,
            nonce = %request.response_nonce,
            "Received StreamSecrets request"
        );
        if let Some(detail) = &request.error_detail {
            tracing::error!(
                resource_names = ?request.resource_names,
                error = %detail.message,
                "Envoy reported errors applying secrets"
            );
        }
        if let Some(last_nonce) = &self.last_nonce {
            if request.response_nonce != *last_nonce {
                tracing::warn!(
                    nonce = %request.response_nonce,
                    expect = %last_nonce,
                    "Received unexpected nonce; ignoring request"
                );
                return Ok(None);
            }
            let version = self.version();
            if request.version_info.is_empty() || request.version_info != version {
                tracing::error!(
                    version_info = %request.version_info,
                    expect = %version,
                    "Client rejected expected version and rolled back"
                );
            }
            if request.node.is_none() {
                request.node = self.last_node.clone();
            }
        }
        let changed = self
            .last_request
            .as_ref()
            .is_none_or(|last| names_changed(&last.resource_names, &request.resource_names));
        self.last_request = Some(request);
        if !changed || self.view.is_none() {
            return Ok(None);
        }
        self.respond()
    }

    /// What the caller may receive now; the response to send, if any.
    /// A view equal to the current one changes nothing.
    pub(crate) fn on_update(
        &mut self,
        view: WorkloadView,
    ) -> Result<Option<DiscoveryResponse>, SdsError> {
        if self.view.as_ref() == Some(&view) {
            return Ok(None);
        }
        self.version += 1;
        self.view = Some(view);
        if self.last_request.is_none() {
            return Ok(None);
        }
        self.respond()
    }

    fn respond(&mut self) -> Result<Option<DiscoveryResponse>, SdsError> {
        let (Some(request), Some(view)) = (&self.last_request, &self.view) else {
            return Ok(None);
        };
        let secrets = resources::secrets(
            &self.config,
            &request.resource_names,
            request.node.as_ref(),
            view,
        )?;
        let nonce = next_nonce();
        let response = DiscoveryResponse {
            version_info: self.version(),
            resources: secrets.iter().map(resources::pack).collect(),
            type_url: request.type_url.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        tracing::debug!(
            version_info = %response.version_info,
            nonce = %response.nonce,
            count = response.resources.len(),
            "Sending StreamSecrets response"
        );
        self.last_nonce = Some(nonce);
        if request.node.is_some() {
            self.last_node = request.node.clone();
        }
        Ok(Some(response))
    }
}

/// SPIRE's `subListChanged`: a different count, or a new name not in the
/// old list.
fn names_changed(old: &[String], new: &[String]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let old: HashSet<&String> = old.iter().collect();
    new.iter().any(|name| !old.contains(name))
}

/// Four random bytes in hex, as SPIRE's nonces.
pub(crate) fn next_nonce() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}
