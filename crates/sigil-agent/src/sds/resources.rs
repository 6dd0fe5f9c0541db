//! Which secrets a set of resource names stands for, and how each is
//! encoded, as SPIRE's `buildResponse` does it. Pure functions over a
//! [`WorkloadView`], so every message shape is testable without a server.
//!
//! Name resolution, in SPIRE's order:
//! - no names: every secret (our trust domain's validation context, each
//!   federated one, each TLS certificate named by its SPIFFE ID);
//! - our trust domain ID, else the default bundle name, else the
//!   all-bundles name (only one of the three per response, as in SPIRE);
//! - a federated trust domain ID the caller's entries federate with;
//! - a SPIFFE ID of the caller, or the default SVID name for its first SVID.
//!
//! Any other name fails the whole request with `InvalidArgument`.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Node, TypedExtensionConfig, data_source,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message as _;
use sigil_spiffe::{Bundle, Selector};

use super::{SdsConfig, SdsError};
use crate::cache::{Snapshot, X509SvidRecord};

/// Type URL of an SDS secret.
pub(crate) const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Type URL of Envoy's SPIFFE certificate validator config.
pub(crate) const SPIFFE_VALIDATOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";
/// Name of Envoy's SPIFFE certificate validator extension.
pub(crate) const SPIFFE_VALIDATOR_NAME: &str = "envoy.tls.cert_validator.spiffe";
/// Node metadata key with which a proxy overrides
/// `disable_spiffe_cert_validation` for itself.
pub(crate) const DISABLE_VALIDATION_METADATA_KEY: &str = "disable_spiffe_cert_validation";

/// What one caller may receive over SDS (SPIRE's workload update): our
/// bundle, the bundles of the trust domains its entries federate with, and
/// its X509-SVIDs, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkloadView {
    pub(crate) bundle: Arc<Bundle>,
    pub(crate) federated: Vec<Arc<Bundle>>,
    pub(crate) identities: Vec<X509SvidRecord>,
}

impl WorkloadView {
    /// The view of a caller with `selectors`. A caller with no identity
    /// still gets our bundle, as in SPIRE.
    pub(crate) fn of(snapshot: &Snapshot, selectors: &[Selector]) -> WorkloadView {
        let identities = snapshot.svids_for(selectors);
        let federated = snapshot
            .federated_bundles_for(&identities)
            .into_iter()
            .cloned()
            .collect();
        WorkloadView {
            bundle: snapshot.bundle.clone(),
            federated,
            identities: identities.into_iter().cloned().collect(),
        }
    }
}

/// The secrets `names` stand for (every secret when `names` holds no
/// non-empty name), for a proxy described by `node`.
pub(crate) fn secrets(
    config: &SdsConfig,
    names: &[String],
    node: Option<&Node>,
    view: &WorkloadView,
) -> Result<Vec<Secret>, SdsError> {
    let mut wanted: BTreeSet<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    let everything = wanted.is_empty();
    let spiffe = spiffe_validator(config, node);
    let mut out = Vec::new();

    let own = view.bundle.trust_domain.id_string();
    if everything || wanted.remove(own.as_str()) {
        out.push(validation_context(&own, &[&view.bundle], spiffe));
    } else if wanted.remove(config.default_bundle_name.as_str()) {
        out.push(validation_context(
            &config.default_bundle_name,
            &[&view.bundle],
            spiffe,
        ));
    } else if wanted.remove(config.default_all_bundles_name.as_str()) {
        if !spiffe {
            return Err(SdsError::AllBundlesNeedSpiffeValidator);
        }
        let mut all: Vec<&Bundle> = std::iter::once(&*view.bundle)
            .chain(view.federated.iter().map(|b| &**b))
            .collect();
        all.sort_by(|a, b| a.trust_domain.name().cmp(b.trust_domain.name()));
        out.push(validation_context(
            &config.default_all_bundles_name,
            &all,
            true,
        ));
    }

    for bundle in &view.federated {
        let id = bundle.trust_domain.id_string();
        if everything || wanted.remove(id.as_str()) {
            out.push(validation_context(&id, &[bundle], spiffe));
        }
    }

    for (i, identity) in view.identities.iter().enumerate() {
        let id = identity.spiffe_id.to_string();
        if everything || wanted.remove(id.as_str()) {
            out.push(tls_certificate(&id, identity));
        } else if i == 0 && wanted.remove(config.default_svid_name.as_str()) {
            out.push(tls_certificate(&config.default_svid_name, identity));
        }
    }

    if !wanted.is_empty() {
        return Err(SdsError::NotAuthorized(
            wanted.into_iter().map(str::to_owned).collect(),
        ));
    }
    Ok(out)
}

/// A secret packed as the `Any` a discovery response carries.
pub(crate) fn pack(secret: &Secret) -> Any {
    Any {
        type_url: SECRET_TYPE_URL.to_owned(),
        value: secret.encode_to_vec(),
    }
}

/// Whether validation contexts use Envoy's SPIFFE certificate validator:
/// unless disabled (by config, or by the proxy's node metadata, which wins
/// when it is a boolean or a Go-style boolean string), and unless the
/// proxy says it is older than Envoy 1.18.
pub(crate) fn spiffe_validator(config: &SdsConfig, node: Option<&Node>) -> bool {
    !validation_disabled(config, node) && supports_spiffe_validator(node)
}

fn validation_disabled(config: &SdsConfig, node: Option<&Node>) -> bool {
    use envoy_types::pb::google::protobuf::value::Kind;
    let value = node
        .and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get(DISABLE_VALIDATION_METADATA_KEY))
        .and_then(|v| v.kind.as_ref());
    match value {
        Some(Kind::BoolValue(b)) => *b,
        Some(Kind::StringValue(s)) => {
            go_parse_bool(s).unwrap_or(config.disable_spiffe_cert_validation)
        }
        _ => config.disable_spiffe_cert_validation,
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Envoy 1.18 and later have the SPIFFE validator; a proxy that does not
/// say its version is assumed to have it.
fn supports_spiffe_validator(node: Option<&Node>) -> bool {
    match node.and_then(|n| n.user_agent_version_type.as_ref()) {
        Some(UserAgentVersionType::UserAgentBuildVersion(build)) => match &build.version {
            Some(v) => (v.major_number == 1 && v.minor_number > 17) || v.major_number > 1,
            None => true,
        },
        _ => true,
    }
}

fn validation_context(name: &str, bundles: &[&Bundle], spiffe: bool) -> Secret {
    let context = if spiffe {
        let config = SpiffeCertValidatorConfig {
            trust_domains: bundles
                .iter()
                .map(|b| spiffe_cert_validator_config::TrustDomain {
                    name: b.trust_domain.name().to_owned(),
                    trust_bundle: Some(inline(certificates_pem(&b.x509_authorities))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        CertificateValidationContext {
            custom_validator_config: Some(TypedExtensionConfig {
                name: SPIFFE_VALIDATOR_NAME.to_owned(),
                typed_config: Some(Any {
                    type_url: SPIFFE_VALIDATOR_TYPE_URL.to_owned(),
                    value: config.encode_to_vec(),
                }),
            }),
            ..Default::default()
        }
    } else {
        let authorities: Vec<Vec<u8>> = bundles
            .iter()
            .flat_map(|b| b.x509_authorities.iter().cloned())
            .collect();
        CertificateValidationContext {
            trusted_ca: Some(inline(certificates_pem(&authorities))),
            ..Default::default()
        }
    };
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(context)),
    }
}

fn tls_certificate(name: &str, identity: &X509SvidRecord) -> Secret {
    let key = pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", identity.key_pkcs8.clone()),
        pem_config(),
    );
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(certificates_pem(&identity.chain))),
            private_key: Some(inline(key.into_bytes())),
            ..Default::default()
        })),
    }
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

/// DER certificates as concatenated PEM `CERTIFICATE` blocks.
pub(crate) fn certificates_pem(ders: &[Vec<u8>]) -> Vec<u8> {
    ders.iter()
        .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.clone()), pem_config()))
        .collect::<String>()
        .into_bytes()
}

/// Go's `pem.EncodeToMemory` layout: LF line endings, 64-column lines.
fn pem_config() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}
