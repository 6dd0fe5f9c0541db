//! The Kubernetes Pod Certificates signer: sigil-server signs the
//! `PodCertificateRequest`s (`certificates.k8s.io/v1`, KEP-4317) that name
//! its configured signer, with X509-SVIDs from its own X.509 CA, and
//! publishes its X.509 authorities as a `ClusterTrustBundle` for that
//! signer, so the kubelet delivers SVIDs to pods with no agent in the
//! pod's path.
//!
//! The parts, one job each:
//! - [`pop`]: the request's key and its proof of possession (a stub PKCS#10
//!   CSR, or a PKIX public key with a signature over the pod UID), checked
//!   here rather than trusted to the API server;
//! - [`identity`]: whether the request matches its pod, service account and
//!   node, and which SPIFFE ID the pod gets (a `ClusterSPIFFEID`, rendered
//!   by sigil-controller-manager's code, or the optional default rule);
//! - [`lifetime`]: the certificate's lifetime and `beginRefreshAt`;
//! - [`controller`]: the watch of requests, the lookups, signing through
//!   the CA and the status write;
//! - [`trust_bundle`]: the `ClusterTrustBundle`, kept equal to the X.509
//!   authorities of the trust bundle through the BundlePublisher loop.
//!
//! This module never decides how a Kubernetes client is made ([`crate::k8s`])
//! and never signs on its own: certificates come from
//! [`CaManager::sign_x509_svid`](crate::ca::CaManager::sign_x509_svid), the
//! path every X509-SVID takes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sigil_plugin::clock::Clock;
use sigil_spiffe::TrustDomain;

use crate::ca::CaManager;
use crate::k8s::{ClusterClient, K8sError};

pub mod controller;
pub mod identity;
pub mod lifetime;
pub mod pop;
pub mod trust_bundle;

/// A Kubernetes signer name, checked as the API server checks
/// `spec.signerName`: `<domain>/<path>`, the domain a DNS subdomain of at
/// least two labels, the path DNS subdomains joined by dots, at most 571
/// characters; and not one reserved by the Kubernetes project
/// (`kubernetes.io` or a subdomain of it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignerName(String);

/// Why a signer name or a ClusterTrustBundle name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `<domain>/<path>`.
    #[error(
        "{0:?} must be a fully qualified domain and path of the form \"example.com/signer-name\""
    )]
    Shape(String),
    /// The domain part is not a DNS subdomain of at least two labels.
    #[error("{name:?}: domain {domain:?} must be a DNS subdomain with at least two labels")]
    Domain {
        /// The signer name.
        name: String,
        /// Its domain part.
        domain: String,
    },
    /// The path part is not DNS subdomains joined by dots.
    #[error("{name:?}: path {path:?} must be lowercase DNS subdomains separated by dots")]
    Path {
        /// The signer name.
        name: String,
        /// Its path part.
        path: String,
    },
    /// Longer than the API allows.
    #[error("{0:?} is longer than 571 characters")]
    TooLong(String),
    /// Under `kubernetes.io`, which the Kubernetes project reserves.
    #[error("{0:?} is reserved for Kubernetes' own signers (kubernetes.io)")]
    Reserved(String),
    /// A ClusterTrustBundle name suffix that is not a DNS subdomain.
    #[error(
        "{0:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
    )]
    BundleSuffix(String),
}

fn is_dns_label(s: &str) -> bool {
    is_dns_name_piece(s, 63)
}

// Lowercase letters, digits and '-', starting and ending alphanumeric.
fn is_dns_name_piece(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Kubernetes' DNS-1123 subdomain: dot-separated labels, at most 253
/// characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

impl SignerName {
    /// Parses and checks `name`.
    pub fn parse(name: &str) -> Result<SignerName, NameError> {
        let Some((domain, path)) = name.split_once('/') else {
            return Err(NameError::Shape(name.to_owned()));
        };
        if path.contains('/') || domain.is_empty() || path.is_empty() {
            return Err(NameError::Shape(name.to_owned()));
        }
        if !is_dns_subdomain(domain) || !domain.contains('.') {
            return Err(NameError::Domain {
                name: name.to_owned(),
                domain: domain.to_owned(),
            });
        }
        if !is_dns_subdomain_path(path) {
            return Err(NameError::Path {
                name: name.to_owned(),
                path: path.to_owned(),
            });
        }
        if name.len() > 571 {
            return Err(NameError::TooLong(name.to_owned()));
        }
        if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
            return Err(NameError::Reserved(name.to_owned()));
        }
        Ok(SignerName(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix every ClusterTrustBundle of this signer must have: the
    /// name with `/` replaced by `:`, then `:`.
    pub fn bundle_prefix(&self) -> String {
        format!("{}:", self.0.replace('/', ":"))
    }
}

// The API server splits the path on '.' and wants each piece to be a DNS
// subdomain; a piece has no dot, so it is one label of up to 253
// characters.
fn is_dns_subdomain_path(path: &str) -> bool {
    path.split('.').all(|p| is_dns_name_piece(p, 253))
}

impl fmt::Display for SignerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ClusterTrustBundle name for `signer` with `suffix` (a DNS subdomain).
pub fn bundle_name(signer: &SignerName, suffix: &str) -> Result<String, NameError> {
    if !is_dns_subdomain(suffix) {
        return Err(NameError::BundleSuffix(suffix.to_owned()));
    }
    Ok(format!("{}{suffix}", signer.bundle_prefix()))
}

/// The default ClusterTrustBundle name suffix: the trust domain name, with
/// `_` (allowed in trust domains, not in Kubernetes names) made `-`.
pub fn default_bundle_suffix(td: &TrustDomain) -> String {
    td.name().replace('_', "-")
}

/// The `server.pod_certificates` block of server.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCertificatesConfig {
    /// `signer_name`: requests naming it are ours.
    pub signer_name: SignerName,
    /// `kube_config_file`: empty for the in-cluster configuration.
    pub kube_config_file: String,
    /// `default_spiffe_id`: give `spiffe://<td>/ns/<ns>/sa/<sa>` when no
    /// ClusterSPIFFEID selects the pod (otherwise deny).
    pub default_spiffe_id: bool,
    /// `class_name`: only ClusterSPIFFEIDs of this class (empty: only those
    /// without a class), as sigil-controller-manager's `className`.
    pub class_name: String,
    /// `cluster_name`: what `{{ .ClusterName }}` renders to.
    pub cluster_name: String,
    /// `cluster_domain`: what `{{ .ClusterDomain }}` renders to.
    pub cluster_domain: String,
    /// The full ClusterTrustBundle name (`<signer with ':'>:<suffix>`).
    pub trust_bundle_name: String,
}

/// Everything the signer needs from the rest of the server.
#[derive(Clone)]
pub struct Signer {
    /// The configuration block.
    pub cfg: PodCertificatesConfig,
    /// The trust domain.
    pub td: TrustDomain,
    /// The CA that signs every X509-SVID.
    pub ca: Arc<CaManager>,
    /// `default_x509_svid_ttl`: the lifetime asked for when the
    /// ClusterSPIFFEID sets no `ttl` (see [`lifetime`]).
    pub default_ttl: Duration,
    /// The server's clock (condition times).
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("signer_name", &self.cfg.signer_name)
            .field("td", &self.td)
            .finish_non_exhaustive()
    }
}

/// Loads the client configuration (files only, no connection): what
/// `validate` checks and `run` uses.
pub fn load_client(cfg: &PodCertificatesConfig) -> Result<ClusterClient, K8sError> {
    ClusterClient::load(&cfg.kube_config_file)
}

/// Starts the signer and the ClusterTrustBundle publisher; they run until
/// the process ends.
pub fn spawn(
    signer: Signer,
    client: ClusterClient,
    bundles: &tokio::sync::watch::Receiver<Arc<sigil_spiffe::Bundle>>,
) {
    let client = Arc::new(client);
    let publisher = Arc::new(trust_bundle::ClusterTrustBundlePublisher::new(
        client.clone(),
        signer.cfg.signer_name.clone(),
        signer.cfg.trust_bundle_name.clone(),
    ));
    crate::publish::spawn(
        &[publisher as Arc<dyn sigil_plugin::bundlepublisher::BundlePublisher>],
        bundles,
        crate::publish::Backoff::default(),
    );
    tokio::spawn(controller::run(signer, client));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signer_names_are_checked_as_the_api_server_checks_them() {
        for good in [
            "spiffe.io/x509-svid",
            "example.com/signer-name",
            "sigil.example.org/team-a.svid",
        ] {
            assert_eq!(SignerName::parse(good).unwrap().as_str(), good);
        }
        let cases = [
            ("spiffe.io", "form \"example.com/signer-name\""),
            ("spiffe.io/a/b", "form"),
            ("/x509", "form"),
            ("spiffe.io/", "form"),
            ("localhost/x509", "at least two labels"),
            ("Spiffe.io/x509", "domain"),
            ("spiffe.io/X509", "path"),
            ("spiffe.io/x509_svid", "path"),
            ("kubernetes.io/x509", "reserved"),
            ("foo.kubernetes.io/x509", "reserved"),
        ];
        for (bad, want) in cases {
            let e = SignerName::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let long = format!("spiffe.io/{}", vec!["a".repeat(63); 10].join("."));
        assert!(matches!(
            SignerName::parse(&long),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn bundle_names_carry_the_signer_prefix_and_a_dns_suffix() {
        let s = SignerName::parse("spiffe.io/x509-svid").unwrap();
        assert_eq!(
            bundle_name(&s, "example.org").unwrap(),
            "spiffe.io:x509-svid:example.org"
        );
        assert!(bundle_name(&s, "Example").is_err());
        assert!(bundle_name(&s, "a:b").is_err());
        let td = TrustDomain::new("my_td.example").unwrap();
        assert_eq!(default_bundle_suffix(&td), "my-td.example");
    }
}
