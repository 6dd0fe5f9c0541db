//! NodeAttestor "x509pop", the part both halves share: SPIRE's X.509
//! proof-of-possession protocol without I/O, and the agent half built from
//! an in-memory certificate chain and key.
//!
//! The conversation, byte for byte as SPIRE's
//! (`pkg/common/plugin/x509pop`):
//! - payload: `{"certificates":["<base64 DER>",...]}`, leaf first;
//! - challenge: `{"rsa_signature":{"nonce":"<base64>"},"ecdsa_signature":null}`
//!   (or the other way round), chosen by the leaf's key type, with a fresh
//!   32-byte nonce;
//! - response: the agent adds its own 32-byte nonce and signs
//!   `SHA-256(challenge nonce || agent nonce)` as a digest: RSASSA-PSS with
//!   SHA-256 (`{"rsa_signature":{"nonce":..,"signature":..}}`) or ECDSA with
//!   `r` and `s` as unpadded big-endian integers
//!   (`{"ecdsa_signature":{"nonce":..,"r":..,"s":..}}`). Byte strings are
//!   standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
//!
//! The agent ID is `spiffe://<td>/spire/agent` followed by the agent path
//! template's output (`/x509pop/<SHA-1 fingerprint of the leaf>` by
//! default). This module never reads files, verifies chains or talks to a
//! network: the sides' plugin files do that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sigil_crypto::key::{KeyType, Signer};
use sigil_spiffe::{Selector, SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AgentNodeAttestor, NodeAttestorError};

/// The plugin name, attestation data type and selector type.
pub const NAME: &str = "x509pop";

/// Length of both nonces, in bytes.
pub const NONCE_LEN: usize = 32;

/// The attestation payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttestationData {
    /// DER certificates, the node's leaf first, then intermediates.
    #[serde(default, with = "b64_list")]
    pub certificates: Vec<Vec<u8>>,
}

/// A nonce the server asks the agent to sign with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NonceChallenge {
    /// The server's nonce.
    #[serde(default, with = "b64")]
    pub nonce: Vec<u8>,
}

/// The challenge: exactly one member is set, by the leaf's key type.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Challenge {
    /// For an RSA leaf.
    #[serde(default)]
    pub rsa_signature: Option<NonceChallenge>,
    /// For an ECDSA leaf.
    #[serde(default)]
    pub ecdsa_signature: Option<NonceChallenge>,
}

/// An RSA answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RsaResponse {
    /// The agent's nonce.
    #[serde(default, with = "b64")]
    pub nonce: Vec<u8>,
    /// RSASSA-PSS (SHA-256) over the combined nonces' digest.
    #[serde(default, with = "b64")]
    pub signature: Vec<u8>,
}

/// An ECDSA answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EcdsaResponse {
    /// The agent's nonce.
    #[serde(default, with = "b64")]
    pub nonce: Vec<u8>,
    /// The signature's `r`, big-endian without leading zeros.
    #[serde(default, with = "b64")]
    pub r: Vec<u8>,
    /// The signature's `s`, big-endian without leading zeros.
    #[serde(default, with = "b64")]
    pub s: Vec<u8>,
}

/// The agent's answer to a [`Challenge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    /// For an RSA key.
    #[serde(default)]
    pub rsa_signature: Option<RsaResponse>,
    /// For an ECDSA key.
    #[serde(default)]
    pub ecdsa_signature: Option<EcdsaResponse>,
}

/// The kind of key a node certificate holds, which picks the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopKey {
    /// RSA, with its modulus size in bits.
    Rsa {
        /// Modulus bits.
        bits: usize,
    },
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Anything else (SPIRE refuses it too when challenging).
    Other,
}

/// The facts about a node certificate that x509pop uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// SHA-1 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The subject's common name, if any (the last one, as Go reads it).
    pub common_name: Option<String>,
    /// The serial number, lowercase hex with an even number of digits.
    pub serial_hex: String,
    /// URI SANs, in certificate order.
    pub uri_sans: Vec<String>,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// The key kind.
    pub key: PopKey,
    /// Whether KeyUsage has digitalSignature (absent KeyUsage: false, as Go).
    pub digital_signature: bool,
}

impl NodeCert {
    /// Parses a DER certificate; `what` names it in errors ("leaf
    /// certificate", "intermediate certificate 0").
    pub fn parse(der: &[u8], what: &str) -> Result<NodeCert, NodeAttestorError> {
        let invalid =
            |e: String| NodeAttestorError::Invalid(format!("unable to parse {what}: {e}"));
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| invalid(e.to_string()))?;
        if !rest.is_empty() {
            return Err(invalid(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .last()
            .map(str::to_owned);
        let digital_signature =
            matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.digital_signature());
        let uri_sans = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(invalid(format!("subjectAltName: {e}"))),
        };
        let spki_info = cert.public_key();
        let key = match spki_info.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.113549.1.1.1" => match spki_info.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => PopKey::Rsa {
                    bits: rsa.key_size(),
                },
                _ => return Err(invalid("RSA public key is malformed".into())),
            },
            "1.2.840.10045.2.1" => match spki_info
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .as_deref()
            {
                Some("1.2.840.10045.3.1.7") => PopKey::EcP256,
                Some("1.3.132.0.34") => PopKey::EcP384,
                _ => PopKey::Other,
            },
            _ => PopKey::Other,
        };
        Ok(NodeCert {
            der: der.to_vec(),
            fingerprint: fingerprint(der),
            common_name,
            serial_hex: serial_hex(cert.raw_serial()),
            uri_sans,
            spki: spki_info.raw.to_vec(),
            key,
            digital_signature,
        })
    }
}

/// SHA-1 of a certificate's DER, lowercase hex (SPIRE's fingerprint).
pub fn fingerprint(der: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// A serial number's DER content as SPIRE prints it: lowercase hex of the
/// magnitude, with a leading zero added to make the length even.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let mut s = hex(&raw[start..]);
    if let Some(stripped) = s.strip_prefix('0') {
        s = stripped.to_owned();
    }
    if s.is_empty() {
        s.push('0');
    }
    if s.len() % 2 == 1 {
        s.insert(0, '0');
    }
    s
}

/// A fresh challenge for `leaf`: refused unless its KeyUsage allows digital
/// signatures and its key is RSA or ECDSA (SPIRE's `GenerateChallenge`).
pub fn generate_challenge(leaf: &NodeCert) -> Result<Challenge, NodeAttestorError> {
    if !leaf.digital_signature {
        return Err(NodeAttestorError::Denied(
            "certificate not intended for digital signature use".into(),
        ));
    }
    let nonce = random_nonce()?;
    match leaf.key {
        PopKey::Rsa { .. } => Ok(Challenge {
            rsa_signature: Some(NonceChallenge { nonce }),
            ecdsa_signature: None,
        }),
        PopKey::EcP256 | PopKey::EcP384 => Ok(Challenge {
            rsa_signature: None,
            ecdsa_signature: Some(NonceChallenge { nonce }),
        }),
        PopKey::Other => Err(NodeAttestorError::Denied(
            "unsupported public key type (x509pop takes RSA, EC P-256 and EC P-384 keys)".into(),
        )),
    }
}

/// The agent's answer to `challenge` with `key` (SPIRE's
/// `CalculateResponse`).
pub fn calculate_response(
    key: &dyn Signer,
    challenge: &Challenge,
) -> Result<Response, NodeAttestorError> {
    let nonce = random_nonce()?;
    let sign = |server_nonce: &[u8]| -> Result<Vec<u8>, NodeAttestorError> {
        let digest = combine_nonces(server_nonce, &nonce)?;
        key.sign_sha256_digest(&digest)
            .map_err(|e| NodeAttestorError::Internal(e.to_string()))
    };
    match key.key_type() {
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            let c = challenge
                .rsa_signature
                .as_ref()
                .ok_or_else(|| NodeAttestorError::Invalid("expecting RSA challenge".into()))?;
            let signature = sign(&c.nonce)?;
            Ok(Response {
                rsa_signature: Some(RsaResponse { nonce, signature }),
                ecdsa_signature: None,
            })
        }
        kt @ (KeyType::EcP256 | KeyType::EcP384) => {
            let c = challenge
                .ecdsa_signature
                .as_ref()
                .ok_or_else(|| NodeAttestorError::Invalid("expecting ECDSA challenge".into()))?;
            let der = sign(&c.nonce)?;
            let field = if kt == KeyType::EcP256 { 32 } else { 48 };
            let fixed = sigil_crypto::ecdsa_der_to_fixed(&der, field)
                .map_err(|e| NodeAttestorError::Internal(e.to_string()))?;
            let (r, s) = fixed.split_at(field);
            Ok(Response {
                rsa_signature: None,
                ecdsa_signature: Some(EcdsaResponse {
                    nonce,
                    r: strip_zeros(r).to_vec(),
                    s: strip_zeros(s).to_vec(),
                }),
            })
        }
    }
}

/// Checks the agent's `response` to `challenge` against `leaf`'s key
/// (SPIRE's `VerifyChallengeResponse`). Failures are `Denied`, except a
/// response of the wrong shape, which is `Invalid`.
pub fn verify_response(
    leaf: &NodeCert,
    challenge: &Challenge,
    response: &Response,
) -> Result<(), NodeAttestorError> {
    let denied =
        |m: &str| NodeAttestorError::Denied(format!("challenge response verification failed: {m}"));
    match leaf.key {
        PopKey::Rsa { .. } => {
            let c = challenge
                .rsa_signature
                .as_ref()
                .ok_or_else(|| denied("expecting RSA challenge"))?;
            let r = response
                .rsa_signature
                .as_ref()
                .ok_or_else(|| denied("expecting RSA response"))?;
            let digest = combine_nonces(&c.nonce, &r.nonce).map_err(|e| denied(&e.to_string()))?;
            sigil_crypto::verify_sha256_digest_signature(&leaf.spki, &digest, &r.signature)
                .map_err(|_| denied("RSA signature verify failed"))
        }
        PopKey::EcP256 | PopKey::EcP384 => {
            let c = challenge
                .ecdsa_signature
                .as_ref()
                .ok_or_else(|| denied("expecting ECDSA challenge"))?;
            let r = response
                .ecdsa_signature
                .as_ref()
                .ok_or_else(|| denied("expecting ECDSA response"))?;
            let digest = combine_nonces(&c.nonce, &r.nonce).map_err(|e| denied(&e.to_string()))?;
            let field = if leaf.key == PopKey::EcP256 { 32 } else { 48 };
            let bad = || denied("ECDSA signature verify failed");
            let (rr, ss) = (strip_zeros(&r.r), strip_zeros(&r.s));
            if rr.len() > field || ss.len() > field {
                return Err(bad());
            }
            let mut fixed = vec![0u8; field * 2];
            fixed[field - rr.len()..field].copy_from_slice(rr);
            fixed[2 * field - ss.len()..].copy_from_slice(ss);
            let der = sigil_crypto::ecdsa_fixed_to_der(&fixed).map_err(|_| bad())?;
            sigil_crypto::verify_sha256_digest_signature(&leaf.spki, &digest, &der)
                .map_err(|_| bad())
        }
        PopKey::Other => Err(denied("unsupported public key type")),
    }
}

/// SPIRE's URI SAN selectors: each URI SAN `x509pop://<td>/<key>/<value>`
/// gives `key -> value` (later SANs with the same key win).
pub fn san_selectors(leaf: &NodeCert, td: &TrustDomain) -> BTreeMap<String, String> {
    let prefix = format!("{NAME}://{}/", td.name());
    let mut out = BTreeMap::new();
    for uri in &leaf.uri_sans {
        let Some(rest) = uri.strip_prefix(&prefix) else {
            continue;
        };
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        if let Some((k, v)) = path.trim_matches('/').split_once('/') {
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

/// The selectors SPIRE gives an x509pop agent: `subject:cn:<cn>`,
/// `ca:fingerprint:<sha1>` for each certificate above the leaf in the
/// verified path (`above`: intermediates, then the root), `serialnumber:<hex>`
/// and `san:<key>:<value>`. Values a selector cannot hold are skipped.
pub fn selectors(
    leaf: &NodeCert,
    above: &[Vec<u8>],
    sans: &BTreeMap<String, String>,
) -> Vec<Selector> {
    let mut values = Vec::new();
    if let Some(cn) = leaf.common_name.as_deref().filter(|cn| !cn.is_empty()) {
        values.push(format!("subject:cn:{cn}"));
    }
    let mut seen = Vec::new();
    for der in above {
        let fp = fingerprint(der);
        if !seen.contains(&fp) {
            values.push(format!("ca:fingerprint:{fp}"));
            seen.push(fp);
        }
    }
    values.push(format!("serialnumber:{}", leaf.serial_hex));
    for (k, v) in sans {
        values.push(format!("san:{k}:{v}"));
    }
    values
        .iter()
        .filter_map(|v| Selector::new(NAME, v).ok())
        .collect()
}

/// What the agent path template can refer to.
#[derive(Debug, Clone)]
pub struct TemplateData<'a> {
    /// The leaf.
    pub leaf: &'a NodeCert,
    /// The server's trust domain.
    pub trust_domain: &'a TrustDomain,
    /// The leaf's SPIFFE ID path with the SVID prefix removed (`spiffe`
    /// mode), else empty.
    pub svid_path_trimmed: &'a str,
    /// The URI SAN selectors.
    pub uri_san_selectors: &'a BTreeMap<String, String>,
}

/// Why an agent path template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed action starting at byte {0}")]
    Unclosed(usize),
    /// An action sigil does not evaluate.
    #[error(
        "{{{{{0}}}}} is not supported by sigil yet (supported: .PluginName, .Fingerprint, \
         .TrustDomain, .SerialNumberHex, .SVIDPathTrimmed, .Subject.CommonName, \
         .URISanSelectors.<key>)"
    )]
    Unsupported(String),
    /// A map key that is not there (Go's `missingkey=error`).
    #[error("map has no entry for key {0:?}")]
    MissingKey(String),
}

/// An agent path template: Go `text/template` text limited to field
/// references (`/{{ .PluginName }}/{{ .Fingerprint }}`,
/// `/cn/{{ .Subject.CommonName }}`, `{{ .URISanSelectors.datacenter }}`).
/// Pipelines and functions are refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPathTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    PluginName,
    Fingerprint,
    TrustDomain,
    SerialNumberHex,
    SvidPathTrimmed,
    CommonName,
    UriSan(String),
}

impl AgentPathTemplate {
    /// The default in `external_pki` mode.
    pub const DEFAULT_EXTERNAL_PKI: &'static str = "/{{ .PluginName }}/{{ .Fingerprint }}";
    /// The default in `spiffe` mode.
    pub const DEFAULT_SPIFFE: &'static str = "/{{ .PluginName }}/{{ .SVIDPathTrimmed }}";

    /// Parses a template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut literal = &rest[..open];
            if trim_next {
                literal = literal.trim_start();
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let mut action = &after[..close];
            if let Some(a) = action.strip_prefix("- ") {
                literal = literal.trim_end();
                action = a;
            }
            trim_next = false;
            if let Some(a) = action.strip_suffix(" -") {
                trim_next = true;
                action = a;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_owned()));
            }
            parts.push(Part::Field(parse_field(action.trim())?));
            offset += open + 2 + close + 2;
            rest = &after[close + 2..];
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if !tail.is_empty() {
            parts.push(Part::Text(tail.to_owned()));
        }
        Ok(AgentPathTemplate { parts })
    }

    /// Renders the template.
    pub fn render(&self, data: &TemplateData<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => match f {
                    Field::PluginName => out.push_str(NAME),
                    Field::Fingerprint => out.push_str(&data.leaf.fingerprint),
                    Field::TrustDomain => out.push_str(data.trust_domain.name()),
                    Field::SerialNumberHex => out.push_str(&data.leaf.serial_hex),
                    Field::SvidPathTrimmed => out.push_str(data.svid_path_trimmed),
                    Field::CommonName => {
                        out.push_str(data.leaf.common_name.as_deref().unwrap_or_default())
                    }
                    Field::UriSan(k) => out.push_str(
                        data.uri_san_selectors
                            .get(k)
                            .ok_or_else(|| TemplateError::MissingKey(k.clone()))?,
                    ),
                },
            }
        }
        Ok(out)
    }
}

fn parse_field(action: &str) -> Result<Field, TemplateError> {
    let unsupported = || TemplateError::Unsupported(format!(" {action} "));
    Ok(match action {
        ".PluginName" => Field::PluginName,
        ".Fingerprint" => Field::Fingerprint,
        ".TrustDomain" => Field::TrustDomain,
        ".SerialNumberHex" => Field::SerialNumberHex,
        ".SVIDPathTrimmed" => Field::SvidPathTrimmed,
        ".Subject.CommonName" => Field::CommonName,
        other => match other.strip_prefix(".URISanSelectors.") {
            Some(k) if !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                Field::UriSan(k.to_owned())
            }
            _ => return Err(unsupported()),
        },
    })
}

/// The agent ID: `spiffe://<td>/spire/agent` + the rendered template, which
/// must be a valid SPIFFE ID path (SPIRE's `idutil.AgentID`).
pub fn agent_id(
    template: &AgentPathTemplate,
    data: &TemplateData<'_>,
) -> Result<SpiffeId, NodeAttestorError> {
    let path = template
        .render(data)
        .map_err(|e| NodeAttestorError::Internal(format!("failed to make spiffe id: {e}")))?;
    let invalid = |e: String| {
        NodeAttestorError::Internal(format!(
            "failed to make spiffe id: invalid agent path suffix {path:?}: {e}"
        ))
    };
    if !path.starts_with('/') {
        return Err(invalid("path must have a leading slash".into()));
    }
    data.trust_domain
        .id_with_path(&format!("/spire/agent{path}"))
        .map_err(|e| invalid(e.to_string()))
}

/// A node's certificate chain and private key, as the agent half presents
/// them.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key.
    pub key: Arc<dyn Signer>,
}

impl Credentials {
    /// Credentials from PEM files' contents, as SPIRE's agent reads them:
    /// `certificates` holds the leaf and any intermediates, `intermediates`
    /// more intermediates appended after them, and the key must match the
    /// leaf.
    pub fn from_pem(
        certificates: &[u8],
        key: &[u8],
        intermediates: Option<&[u8]>,
    ) -> Result<Self, NodeAttestorError> {
        let invalid =
            |e: String| NodeAttestorError::NoEvidence(format!("unable to load keypair: {e}"));
        let mut chain =
            sigil_crypto::parse_pem_certs(certificates).map_err(|e| invalid(e.to_string()))?;
        let key = sigil_crypto::parse_pem_or_der_key(key).map_err(|e| invalid(e.to_string()))?;
        // parse_pem_certs refuses a text without certificates.
        let leaf_der = chain
            .first()
            .ok_or_else(|| invalid("no certificate".into()))?;
        let leaf =
            NodeCert::parse(leaf_der, "leaf certificate").map_err(|e| invalid(e.to_string()))?;
        if leaf.spki != key.public_key_der() {
            return Err(invalid("private key does not match public key".into()));
        }
        if let Some(pem) = intermediates {
            chain.extend(sigil_crypto::parse_pem_certs(pem).map_err(|e| {
                NodeAttestorError::NoEvidence(format!(
                    "unable to load intermediate certificates: {e}"
                ))
            })?);
        }
        Ok(Credentials {
            chain,
            key: Arc::new(key),
        })
    }

    /// The attestation payload.
    pub fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        serde_json::to_vec(&AttestationData {
            certificates: self.chain.clone(),
        })
        .map_err(|e| {
            NodeAttestorError::Internal(format!("unable to marshal attestation data: {e}"))
        })
    }

    /// The answer to a challenge, as JSON.
    pub fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        let challenge: Challenge = serde_json::from_slice(challenge).map_err(|e| {
            NodeAttestorError::Invalid(format!("unable to unmarshal challenge: {e}"))
        })?;
        let response = calculate_response(self.key.as_ref(), &challenge).map_err(|e| {
            NodeAttestorError::Internal(format!("failed to calculate challenge response: {e}"))
        })?;
        serde_json::to_vec(&response).map_err(|e| {
            NodeAttestorError::Internal(format!("unable to marshal challenge response: {e}"))
        })
    }
}

/// The agent half over in-memory credentials. The agent's plugin file
/// replaces them before each attestation ([`X509PopAgent::set`]) so rotated
/// node certificates are used; the challenge is answered with the same
/// credentials the payload carried.
#[derive(Debug)]
pub struct X509PopAgent {
    creds: Mutex<Option<Credentials>>,
}

impl X509PopAgent {
    /// An agent half presenting `creds`.
    pub fn new(creds: Credentials) -> Self {
        X509PopAgent {
            creds: Mutex::new(Some(creds)),
        }
    }

    /// An agent half with nothing to present yet.
    pub fn empty() -> Self {
        X509PopAgent {
            creds: Mutex::new(None),
        }
    }

    /// Replaces the credentials.
    pub fn set(&self, creds: Credentials) {
        *self.creds.lock().unwrap_or_else(|p| p.into_inner()) = Some(creds);
    }

    fn current(&self) -> Result<Credentials, NodeAttestorError> {
        self.creds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| NodeAttestorError::NoEvidence("no x509pop credentials loaded".into()))
    }
}

#[async_trait]
impl AgentNodeAttestor for X509PopAgent {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        self.current()?.payload()
    }

    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        self.current()?.respond(challenge)
    }
}

fn random_nonce() -> Result<Vec<u8>, NodeAttestorError> {
    let mut n = vec![0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n)
        .map_err(|_| NodeAttestorError::Internal("unable to generate a nonce".into()))?;
    Ok(n)
}

fn combine_nonces(challenge: &[u8], response: &[u8]) -> Result<[u8; 32], NodeAttestorError> {
    if challenge.len() != NONCE_LEN {
        return Err(NodeAttestorError::Invalid("invalid challenge nonce".into()));
    }
    if response.len() != NONCE_LEN {
        return Err(NodeAttestorError::Invalid("invalid response nonce".into()));
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(challenge);
    ctx.update(response);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `[]byte` as Go's `encoding/json` writes it: standard base64 with
/// padding; `null` reads as empty.
mod b64 {
    use super::{Engine, STANDARD};

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = serde::Deserialize::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => STANDARD
                .decode(s.as_bytes())
                .map_err(|e| serde::de::Error::custom(format!("illegal base64 data: {e}"))),
        }
    }
}

/// `[][]byte` as Go's `encoding/json` writes it.
mod b64_list {
    use super::{Engine, STANDARD};

    pub fn serialize<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(&STANDARD.encode(b))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v: Option<Vec<Option<String>>> = serde::Deserialize::deserialize(d)?;
        v.unwrap_or_default()
            .into_iter()
            .map(|s| {
                STANDARD
                    .decode(s.unwrap_or_default().as_bytes())
                    .map_err(|e| serde::de::Error::custom(format!("illegal base64 data: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType, SerialNumber,
    };
    use sigil_crypto::SoftwareKey;

    use super::*;
    use crate::nodeattestor::DirectChallenges;

    fn rc(key: &SoftwareKey) -> KeyPair {
        KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap()
    }

    /// A CA and a node certificate for `node_key`, CN `node-1`, serial
    /// 0x0a1b2c, one x509pop URI SAN.
    fn node_chain(node_key: &SoftwareKey) -> (Vec<u8>, Vec<u8>) {
        let ca_key = rc(&SoftwareKey::generate(KeyType::EcP256).unwrap());
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "node CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "node-1");
        leaf.serial_number = Some(SerialNumber::from_slice(&[0x0a, 0x1b, 0x2c]));
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.subject_alt_names = vec![SanType::URI(
            "x509pop://example.org/datacenter/eu-1".try_into().unwrap(),
        )];
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf_der = leaf
            .signed_by(&rc(node_key), &issuer)
            .unwrap()
            .der()
            .to_vec();
        (leaf_der, ca_der)
    }

    fn round_trip(key_type: KeyType) {
        let key = Arc::new(SoftwareKey::generate(key_type).unwrap());
        let (leaf_der, _) = node_chain(&key);
        let leaf = NodeCert::parse(&leaf_der, "leaf certificate").unwrap();
        let creds = Credentials {
            chain: vec![leaf_der],
            key: key.clone(),
        };
        let challenge = generate_challenge(&leaf).unwrap();
        let wire = serde_json::to_vec(&challenge).unwrap();
        let answer = creds.respond(&wire).unwrap();
        let response: Response = serde_json::from_slice(&answer).unwrap();
        verify_response(&leaf, &challenge, &response).unwrap_or_else(|e| panic!("{key_type}: {e}"));

        // Any change to the signature, or a fresh server nonce, is refused.
        let mut tampered = response.clone();
        match (&mut tampered.rsa_signature, &mut tampered.ecdsa_signature) {
            (Some(r), _) => r.signature[10] ^= 1,
            (_, Some(e)) => e.s[5] ^= 1,
            _ => unreachable!(),
        }
        let e = verify_response(&leaf, &challenge, &tampered).unwrap_err();
        assert!(matches!(e, NodeAttestorError::Denied(_)), "{e:?}");
        let other = generate_challenge(&leaf).unwrap();
        assert!(verify_response(&leaf, &other, &response).is_err());
    }

    #[test]
    fn ec_p256_proof_of_possession_round_trips() {
        round_trip(KeyType::EcP256);
    }

    #[test]
    fn ec_p384_proof_of_possession_round_trips() {
        round_trip(KeyType::EcP384);
    }

    #[test]
    fn rsa_proof_of_possession_round_trips() {
        round_trip(KeyType::Rsa2048);
    }

    fn openssl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
        let out = std::process::Command::new("/usr/bin/openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run /usr/bin/openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The `pkeyutl` options that sign or verify a precomputed SHA-256
    /// digest as Go's `rsa.SignPSS`/`rsa.VerifyPSS(.., crypto.SHA256, digest,
    /// nil)` do (PSS, MGF1-SHA-256, the largest salt when signing, any salt
    /// when verifying); ECDSA needs none: `pkeyutl` signs its input as the
    /// digest, as Go's `ecdsa.Sign` does, also when it is shorter than the
    /// curve's order (P-384).
    fn go_pss(kt: KeyType, salt: &'static str) -> Vec<&'static str> {
        match kt {
            KeyType::Rsa2048 | KeyType::Rsa4096 => vec![
                "-pkeyopt",
                "digest:sha256",
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                salt,
            ],
            _ => Vec::new(),
        }
    }

    /// SPIRE's agent signs with Go's crypto; openssl signs the same way
    /// (RSA-PSS with the largest salt, ECDSA over the bare 32-byte digest)
    /// and sigil's server side accepts it. The other way round, what
    /// sigil's agent signs verifies as Go's server verifies it.
    #[test]
    fn signatures_interoperate_with_an_independent_implementation() {
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let key = SoftwareKey::generate(kt).unwrap();
            std::fs::write(d.join("key.pem"), key.to_pkcs8_pem()).unwrap();
            let (leaf_der, _) = node_chain(&key);
            std::fs::write(
                d.join("leaf.pem"),
                sigil_crypto::pem_encode_certs(std::slice::from_ref(&leaf_der)),
            )
            .unwrap();
            let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();

            // openssl (as a Go agent) answers, sigil verifies.
            let challenge = generate_challenge(&leaf).unwrap();
            let agent_nonce = vec![0x5a; NONCE_LEN];
            let server_nonce = match (&challenge.rsa_signature, &challenge.ecdsa_signature) {
                (Some(c), _) | (_, Some(c)) => c.nonce.clone(),
                _ => unreachable!(),
            };
            let digest = combine_nonces(&server_nonce, &agent_nonce).unwrap();
            std::fs::write(d.join("digest"), digest).unwrap();
            let mut args = vec![
                "pkeyutl", "-sign", "-inkey", "key.pem", "-in", "digest", "-out", "sig",
            ];
            args.extend(go_pss(kt, "rsa_pss_saltlen:max"));
            openssl(d, &args);
            let sig = std::fs::read(d.join("sig")).unwrap();
            let response = match kt {
                KeyType::Rsa2048 => Response {
                    rsa_signature: Some(RsaResponse {
                        nonce: agent_nonce,
                        signature: sig,
                    }),
                    ecdsa_signature: None,
                },
                _ => {
                    let field = if kt == KeyType::EcP256 { 32 } else { 48 };
                    let fixed = sigil_crypto::ecdsa_der_to_fixed(&sig, field).unwrap();
                    let (r, s) = fixed.split_at(field);
                    Response {
                        rsa_signature: None,
                        ecdsa_signature: Some(EcdsaResponse {
                            nonce: agent_nonce,
                            r: strip_zeros(r).to_vec(),
                            s: strip_zeros(s).to_vec(),
                        }),
                    }
                }
            };
            verify_response(&leaf, &challenge, &response)
                .unwrap_or_else(|e| panic!("{kt}: openssl's answer refused: {e}"));

            // sigil answers, openssl (as a Go server) verifies.
            let response = calculate_response(&key, &challenge).unwrap();
            let (nonce, sig) = match (&response.rsa_signature, &response.ecdsa_signature) {
                (Some(r), _) => (r.nonce.clone(), r.signature.clone()),
                (_, Some(e)) => {
                    let field = if kt == KeyType::EcP256 { 32 } else { 48 };
                    let (rr, ss) = (strip_zeros(&e.r), strip_zeros(&e.s));
                    let mut fixed = vec![0u8; 2 * field];
                    fixed[field - rr.len()..field].copy_from_slice(rr);
                    fixed[2 * field - ss.len()..].copy_from_slice(ss);
                    (
                        e.nonce.clone(),
                        sigil_crypto::ecdsa_fixed_to_der(&fixed).unwrap(),
                    )
                }
                _ => unreachable!(),
            };
            let digest = combine_nonces(&server_nonce, &nonce).unwrap();
            std::fs::write(d.join("digest"), digest).unwrap();
            std::fs::write(d.join("sig"), sig).unwrap();
            let mut args = vec![
                "pkeyutl", "-verify", "-certin", "-inkey", "leaf.pem", "-in", "digest", "-sigfile",
                "sig",
            ];
            args.extend(go_pss(kt, "rsa_pss_saltlen:auto"));
            openssl(d, &args);
        }
    }

    #[test]
    fn a_response_signed_by_another_key_is_refused() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (leaf_der, _) = node_chain(&key);
        let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();
        let challenge = generate_challenge(&leaf).unwrap();
        let wrong = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let response = calculate_response(&wrong, &challenge).unwrap();
        let e = verify_response(&leaf, &challenge, &response).unwrap_err();
        assert_eq!(
            e.to_string(),
            "challenge response verification failed: ECDSA signature verify failed"
        );
        // An RSA key cannot answer an ECDSA challenge.
        let rsa = SoftwareKey::generate(KeyType::Rsa2048).unwrap();
        let e = calculate_response(&rsa, &challenge).unwrap_err();
        assert_eq!(e.to_string(), "expecting RSA challenge");
    }

    #[test]
    fn wire_format_is_spires_json_with_standard_base64() {
        let c = Challenge {
            rsa_signature: None,
            ecdsa_signature: Some(NonceChallenge {
                nonce: vec![0xfb; 4],
            }),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"rsa_signature":null,"ecdsa_signature":{"nonce":"+/v7+w=="}}"#
        );
        let d = AttestationData {
            certificates: vec![vec![1, 2, 3]],
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"certificates":["AQID"]}"#
        );
        // Go writes nil pointers as null and may omit them; both read back.
        let r: Response =
            serde_json::from_str(r#"{"ecdsa_signature":{"nonce":"AQ==","r":"Ag==","s":null}}"#)
                .unwrap();
        let e = r.ecdsa_signature.unwrap();
        assert_eq!((e.nonce, e.r, e.s), (vec![1], vec![2], vec![]));
        assert!(serde_json::from_str::<AttestationData>(r#"{"certificates":"x"}"#).is_err());
        assert!(serde_json::from_str::<AttestationData>(r#"{"certificates":["!"]}"#).is_err());
    }

    #[test]
    fn nonces_of_the_wrong_length_are_refused() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (leaf_der, _) = node_chain(&key);
        let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();
        let challenge = generate_challenge(&leaf).unwrap();
        let mut response = calculate_response(&key, &challenge).unwrap();
        response.ecdsa_signature.as_mut().unwrap().nonce.pop();
        let e = verify_response(&leaf, &challenge, &response).unwrap_err();
        assert_eq!(
            e.to_string(),
            "challenge response verification failed: invalid response nonce"
        );
    }

    #[test]
    fn fingerprint_serial_and_selectors_of_a_known_certificate() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (leaf_der, ca_der) = node_chain(&key);
        let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();
        // SHA-1 of a fixed input, as `sha1sum` prints it.
        assert_eq!(
            fingerprint(b"foo"),
            "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"
        );
        assert_eq!(leaf.fingerprint.len(), 40);
        assert_eq!(leaf.serial_hex, "0a1b2c");
        assert_eq!(serial_hex(&[0x00, 0x80]), "80");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(leaf.common_name.as_deref(), Some("node-1"));
        assert!(leaf.digital_signature);
        let td = TrustDomain::new("example.org").unwrap();
        let sans = san_selectors(&leaf, &td);
        assert_eq!(sans.get("datacenter").map(String::as_str), Some("eu-1"));
        assert!(san_selectors(&leaf, &TrustDomain::new("other.org").unwrap()).is_empty());
        let got: Vec<String> = selectors(&leaf, &[ca_der.clone(), ca_der.clone()], &sans)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            got,
            vec![
                "x509pop:subject:cn:node-1".to_owned(),
                format!("x509pop:ca:fingerprint:{}", fingerprint(&ca_der)),
                "x509pop:serialnumber:0a1b2c".to_owned(),
                "x509pop:san:datacenter:eu-1".to_owned(),
            ]
        );
    }

    #[test]
    fn agent_path_templates_render_like_spires() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (leaf_der, _) = node_chain(&key);
        let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();
        let td = TrustDomain::new("example.org").unwrap();
        let sans = san_selectors(&leaf, &td);
        let data = TemplateData {
            leaf: &leaf,
            trust_domain: &td,
            svid_path_trimmed: "",
            uri_san_selectors: &sans,
        };
        let id = |t: &str| agent_id(&AgentPathTemplate::parse(t).unwrap(), &data);
        assert_eq!(
            id(AgentPathTemplate::DEFAULT_EXTERNAL_PKI)
                .unwrap()
                .as_str(),
            format!(
                "spiffe://example.org/spire/agent/x509pop/{}",
                leaf.fingerprint
            )
        );
        assert_eq!(
            id("/cn/{{ .Subject.CommonName }}/{{.URISanSelectors.datacenter}}-{{ .SerialNumberHex }}")
                .unwrap()
                .as_str(),
            "spiffe://example.org/spire/agent/cn/node-1/eu-1-0a1b2c"
        );
        assert_eq!(
            id("/{{ .TrustDomain -}}  /x").unwrap().as_str(),
            "spiffe://example.org/spire/agent/example.org/x"
        );
        // A missing map key and a path that is not a path are errors.
        assert!(id("/{{ .URISanSelectors.rack }}").is_err());
        assert!(id("no-slash").is_err());
        let e = AgentPathTemplate::parse("/{{ .Subject.CommonName | upper }}").unwrap_err();
        assert!(e.to_string().contains("not supported by sigil yet"), "{e}");
        assert!(AgentPathTemplate::parse("/{{ .PluginName ").is_err());
    }

    #[tokio::test]
    async fn the_agent_half_answers_with_the_credentials_its_payload_carried() {
        let key = Arc::new(SoftwareKey::generate(KeyType::EcP384).unwrap());
        let (leaf_der, _) = node_chain(&key);
        let agent = X509PopAgent::empty();
        assert!(matches!(
            agent.payload().await,
            Err(NodeAttestorError::NoEvidence(_))
        ));
        agent.set(Credentials {
            chain: vec![leaf_der.clone()],
            key,
        });
        let payload: AttestationData =
            serde_json::from_slice(&agent.payload().await.unwrap()).unwrap();
        assert_eq!(payload.certificates, vec![leaf_der.clone()]);
        let leaf = NodeCert::parse(&leaf_der, "leaf").unwrap();
        let challenge = generate_challenge(&leaf).unwrap();
        let mut ch = DirectChallenges::new(&agent);
        let answer = crate::nodeattestor::Challenges::challenge(
            &mut ch,
            serde_json::to_vec(&challenge).unwrap(),
        )
        .await
        .unwrap();
        let response: Response = serde_json::from_slice(&answer).unwrap();
        verify_response(&leaf, &challenge, &response).unwrap();
    }

    #[test]
    fn credentials_from_pem_refuse_a_key_that_does_not_match() {
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let (leaf_der, ca_der) = node_chain(&key);
        let pem = sigil_crypto::pem_encode_certs(&[leaf_der]);
        let ca_pem = sigil_crypto::pem_encode_certs(&[ca_der]);
        let c = Credentials::from_pem(
            pem.as_bytes(),
            key.to_pkcs8_pem().as_bytes(),
            Some(ca_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(c.chain.len(), 2);
        let other = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let e = Credentials::from_pem(pem.as_bytes(), other.to_pkcs8_pem().as_bytes(), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to load keypair: private key does not match public key"
        );
    }
}
