//! The `DeltaSecrets` protocol (incremental xDS) as a state machine with
//! no I/O, beside [`StreamState`](super::stream::StreamState) for
//! `StreamSecrets`. SPIRE's agent does not serve it; sigil does, with the
//! same resources and the same refusals:
//!
//! - The proxy subscribes and unsubscribes names
//!   (`resource_names_subscribe` / `_unsubscribe`); a first request may
//!   list the versions it already holds (`initial_resource_versions`).
//! - Each resource carries its own version (a digest of its content), and
//!   a response carries only the subscribed resources whose version the
//!   proxy does not hold: a rotation sends the changed certificate, not
//!   everything again.
//! - A request that changes no subscription is an ACK or, with
//!   `error_detail`, a NACK: logged, answered with nothing, so a secret the
//!   proxy cannot apply is not resent in a loop.
//! - A subscribed name this caller may not have ends the stream with
//!   `InvalidArgument`, as `StreamSecrets` does.
//! - A request without `node` keeps the last one seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use sha2::{Digest, Sha256};

use super::resources::{self, WorkloadView};
use super::stream::next_nonce;
use super::{SdsConfig, SdsError};

/// One `DeltaSecrets` stream's state.
#[derive(Debug)]
pub(crate) struct DeltaState {
    config: Arc<SdsConfig>,
    /// What the proxy subscribed to.
    subscribed: BTreeSet<String>,
    /// The version of each resource the proxy holds.
    held: BTreeMap<String, String>,
    /// Counts the responses sent (`system_version_info`).
    sent: u64,
    first_request_seen: bool,
    type_url: String,
    node: Option<Node>,
    view: Option<WorkloadView>,
}

impl DeltaState {
    pub(crate) fn new(config: Arc<SdsConfig>) -> DeltaState {
        DeltaState {
            config,
            subscribed: BTreeSet::new(),
            held: BTreeMap::new(),
            sent: 0,
            first_request_seen: false,
            type_url: resources::SECRET_TYPE_URL.to_owned(),
            node: None,
            view: None,
        }
    }

    /// A request from the proxy; the response to send, if any.
    pub(crate) fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
    ) -> Result<Option<DeltaDiscoveryResponse>, SdsError> {
        tracing::debug!(
            subscribe = ?request.resource_names_subscribe,
            unsubscribe = ?request.resource_names_unsubscribe,
            nonce = %request.response_nonce,
            "Received DeltaSecrets request"
        );
        if let Some(detail) = &request.error_detail {
            tracing::error!(
                nonce = %request.response_nonce,
                error = %detail.message,
                "Envoy reported errors applying secrets"
            );
        }
        if request.node.is_some() {
            self.node = request.node;
        }
        if !request.type_url.is_empty() {
            self.type_url = request.type_url;
        }
        if !self.first_request_seen {
            self.first_request_seen = true;
            self.held.extend(request.initial_resource_versions);
        }
        let mut changed = false;
        for name in request.resource_names_unsubscribe {
            self.held.remove(&name);
            changed |= self.subscribed.remove(&name);
        }
        for name in request.resource_names_subscribe {
            changed |= self.subscribed.insert(name);
        }
        if !changed {
            return Ok(None);
        }
        self.respond()
    }

    /// What the caller may receive now; the response to send, if any.
    pub(crate) fn on_update(
        &mut self,
        view: WorkloadView,
    ) -> Result<Option<DeltaDiscoveryResponse>, SdsError> {
        if self.view.as_ref() == Some(&view) {
            return Ok(None);
        }
        self.view = Some(view);
        self.respond()
    }

    /// The subscribed resources the proxy does not hold in their current
    /// version.
    fn respond(&mut self) -> Result<Option<DeltaDiscoveryResponse>, SdsError> {
        let Some(view) = &self.view else {
            return Ok(None);
        };
        if self.subscribed.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = self.subscribed.iter().cloned().collect();
        let secrets = resources::secrets(&self.config, &names, self.node.as_ref(), view)?;
        let mut out = Vec::new();
        for secret in &secrets {
            let any = resources::pack(secret);
            let version = hex::encode(&Sha256::digest(&any.value)[..8]);
            if self.held.get(&secret.name) == Some(&version) {
                continue;
            }
            self.held.insert(secret.name.clone(), version.clone());
            out.push(Resource {
                name: secret.name.clone(),
                version,
                resource: Some(any),
                ..Default::default()
            });
        }
        if out.is_empty() {
            return Ok(None);
        }
        self.sent += 1;
        let response = DeltaDiscoveryResponse {
            system_version_info: self.sent.to_string(),
            resources: out,
            type_url: self.type_url.clone(),
            nonce: next_nonce(),
            ..Default::default()
        };
        tracing::debug!(
            nonce = %response.nonce,
            count = response.resources.len(),
            "Sending DeltaSecrets response"
        );
        Ok(Some(response))
    }
}
