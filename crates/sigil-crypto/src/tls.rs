//! rustls configurations for SPIFFE mTLS: the one crypto provider
//! (aws-lc-rs, X25519MLKEM768 offered first), server configs that check
//! client SVIDs against a bundle, and client configs that authenticate the
//! server by SPIFFE ID instead of DNS name.
//!
//! Configs are plain values built from DER inputs; when a bundle rotates,
//! build a new config and swap it in. This module never reads files.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureAlgorithm, SignatureScheme,
};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, TrustAnchor, UnixTime,
};
use sigil_spiffe::{SpiffeId, TrustDomain};

use crate::CryptoError;
use crate::key::{KeyType, Signer};
use crate::x509::{EkuPolicy, leaf_spiffe_id, trust_anchors, verify_webpki_path};

/// The ALPN protocol both sides offer (gRPC over HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

/// The aws-lc-rs provider every sigil TLS config uses. With rustls'
/// `prefer-post-quantum` feature its first key-exchange group is
/// X25519MLKEM768.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Whether a server asks for and checks client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Do not ask for a client certificate; `client_roots` is ignored.
    None,
    /// Ask; verify a presented certificate against the roots; let clients
    /// without one through (SPIRE's agent API: attestation happens first).
    Optional,
    /// Ask and require a certificate that verifies against the roots.
    Required,
}

/// Which server SPIFFE IDs a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdPolicy {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
}

impl ServerIdPolicy {
    /// Accepts or rejects a presented ID.
    pub fn check(&self, id: &SpiffeId) -> Result<(), CryptoError> {
        let ok = match self {
            ServerIdPolicy::Exact(want) => want == id,
            ServerIdPolicy::MemberOf(td) => id.is_member_of(td),
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::UnexpectedServerId {
                expected: self.to_string(),
                presented: id.to_string(),
            })
        }
    }
}

impl fmt::Display for ServerIdPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerIdPolicy::Exact(id) => write!(f, "exactly {id}"),
            ServerIdPolicy::MemberOf(td) => write!(f, "a member of trust domain {td}"),
        }
    }
}

/// A server config presenting `cert_chain` (leaf first) with the PKCS#8
/// key, offering ALPN `h2`, and checking client certificates against
/// `client_roots` as `client_auth` says. Client certificates are checked for
/// chain and clientAuth EKU only; read the caller's ID with
/// [`peer_spiffe_id`] and authorise above TLS.
pub fn server_config(
    cert_chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    client_roots: Vec<Vec<u8>>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, CryptoError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let mut store = RootCertStore::empty();
            for (i, der) in client_roots.into_iter().enumerate() {
                store.add(CertificateDer::from(der)).map_err(|e| {
                    CryptoError::CertificateParse {
                        index: Some(i),
                        reason: format!("unusable as a client trust root: {e}"),
                    }
                })?;
            }
            if store.is_empty() {
                return Err(CryptoError::EmptyInput {
                    what: "the set of client trust roots",
                });
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(store.into(), provider());
            if client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build().map_err(tls_err)?)
        }
    };
    let chain = cert_chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let mut config = builder.with_single_cert(chain, key).map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A server config like [`server_config`] with [`ClientAuth::Optional`],
/// that accepts client certificates as SPIRE's server does: a member of
/// `own_td` chaining to `own_roots`, or exactly one of the IDs in
/// `foreign` (admin IDs of other trust domains), chaining to the roots
/// given with it (its trust domain's bundle). Any other ID is refused in
/// the handshake. Clients without a certificate get through.
pub fn server_config_spiffe_clients(
    cert_chain: Vec<Vec<u8>>,
    key_pkcs8: Vec<u8>,
    own_td: TrustDomain,
    own_roots: Vec<Vec<u8>>,
    foreign: Vec<(SpiffeId, Vec<Vec<u8>>)>,
) -> Result<ServerConfig, CryptoError> {
    let own = optional_client_verifier(own_roots)?;
    let mut foreign_verifiers = Vec::with_capacity(foreign.len());
    for (id, roots) in foreign {
        foreign_verifiers.push((id, optional_client_verifier(roots)?));
    }
    let verifier = SpiffeClientVerifier {
        own_td,
        own,
        foreign: foreign_verifiers,
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(verifier));
    let chain = cert_chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let mut config = builder.with_single_cert(chain, key).map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn optional_client_verifier(
    roots: Vec<Vec<u8>>,
) -> Result<Arc<dyn ClientCertVerifier>, CryptoError> {
    let mut store = RootCertStore::empty();
    for (i, der) in roots.into_iter().enumerate() {
        store
            .add(CertificateDer::from(der))
            .map_err(|e| CryptoError::CertificateParse {
                index: Some(i),
                reason: format!("unusable as a client trust root: {e}"),
            })?;
    }
    if store.is_empty() {
        return Err(CryptoError::EmptyInput {
            what: "the set of client trust roots",
        });
    }
    WebPkiClientVerifier::builder_with_provider(store.into(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_err)
}

/// Picks the roots a client certificate must chain to from the trust domain
/// of its SPIFFE ID (see [`server_config_spiffe_clients`]).
#[derive(Debug)]
struct SpiffeClientVerifier {
    own_td: TrustDomain,
    own: Arc<dyn ClientCertVerifier>,
    foreign: Vec<(SpiffeId, Arc<dyn ClientCertVerifier>)>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints, as SPIRE's server: clients send their SVID whatever its
        // trust domain.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = leaf_spiffe_id(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if id.is_member_of(&self.own_td) {
            return self.own.verify_client_cert(end_entity, intermediates, now);
        }
        match self.foreign.iter().find(|(allowed, _)| *allowed == id) {
            Some((_, verifier)) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.own.supported_verify_schemes()
    }
}

/// A client config that trusts `roots` and accepts only a server presenting
/// `expected_server_id`; the DNS name used to connect is ignored. Presents
/// `client_identity` (chain leaf first, PKCS#8 key) when given. ALPN `h2`.
pub fn client_config(
    roots: Vec<Vec<u8>>,
    expected_server_id: SpiffeId,
    client_identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> Result<ClientConfig, CryptoError> {
    client_config_with_policy(
        roots,
        ServerIdPolicy::Exact(expected_server_id),
        client_identity,
    )
}

/// [`client_config`] with any [`ServerIdPolicy`].
pub fn client_config_with_policy(
    roots: Vec<Vec<u8>>,
    policy: ServerIdPolicy,
    client_identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
) -> Result<ClientConfig, CryptoError> {
    let verifier = SpiffeServerVerifier::new(&roots, policy)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client_identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The SPIFFE ID of a peer's leaf certificate (as rustls hands it over,
/// already chain-verified): exactly one URI SAN holding a valid SPIFFE ID.
pub fn peer_spiffe_id(cert_der: &[u8]) -> Result<SpiffeId, CryptoError> {
    leaf_spiffe_id(cert_der)
}

/// Server certificate verifier that validates the chain to a SPIFFE bundle
/// with webpki (serverAuth EKU), ignores the DNS name, and applies a
/// [`ServerIdPolicy`] to the leaf's SPIFFE ID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    /// `None`: the chain alone is checked (see [`SpiffeServerVerifier::chain_only`]).
    policy: Option<ServerIdPolicy>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier trusting the DER `roots`.
    pub fn new(roots: &[Vec<u8>], policy: ServerIdPolicy) -> Result<Self, CryptoError> {
        Self::with_policy(roots, Some(policy))
    }

    /// A verifier that checks only the chain to `roots` (serverAuth EKU),
    /// not the name the server presents nor any SPIFFE ID.
    ///
    /// For servers reached by an address their certificate does not name,
    /// where the operator's trust is in the issuing CA alone: SPIRE's `k8s`
    /// workload attestor talks to the kubelet this way on 127.0.0.1 when it
    /// does not know the node name.
    pub fn chain_only(roots: &[Vec<u8>]) -> Result<Self, CryptoError> {
        Self::with_policy(roots, None)
    }

    fn with_policy(roots: &[Vec<u8>], policy: Option<ServerIdPolicy>) -> Result<Self, CryptoError> {
        if roots.is_empty() {
            return Err(CryptoError::EmptyInput {
                what: "the set of trust roots",
            });
        }
        let ders: Vec<CertificateDer<'_>> = roots
            .iter()
            .map(|r| CertificateDer::from(r.as_slice()))
            .collect();
        let anchors = trust_anchors(&ders)?
            .into_iter()
            .map(|a| a.to_owned())
            .collect();
        Ok(SpiffeServerVerifier {
            anchors,
            policy,
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_webpki_path(
            end_entity,
            intermediates,
            &self.anchors,
            now,
            EkuPolicy::ServerAuth,
        )
        .map_err(webpki_to_rustls)?;
        if let Some(policy) = &self.policy {
            let id = leaf_spiffe_id(end_entity).map_err(other_cert_error)?;
            policy.check(&id).map_err(other_cert_error)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn tls_err(e: impl fmt::Display) -> CryptoError {
    CryptoError::TlsConfig {
        reason: e.to_string(),
    }
}

fn other_cert_error(e: CryptoError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn webpki_to_rustls(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let ce = match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => {
            return other_cert_error(CryptoError::ChainVerification {
                reason: format!("{other:?}"),
            });
        }
    };
    rustls::Error::InvalidCertificate(ce)
}

/// How a client decides to trust the server it connects to.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Verify the server's chain against these X.509 authorities (DER) and
    /// require the server's SPIFFE ID.
    Bundle(Vec<Vec<u8>>),
    /// Accept any chain whose leaf names the server's SPIFFE ID, unverified.
    /// Only for an agent's first attestation with `insecure_bootstrap`.
    InsecureBootstrap,
}

/// A TLS client identity whose private key is a [`Signer`].
#[derive(Debug, Clone)]
pub struct SignerIdentity {
    /// Certificate chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The key.
    pub key: Arc<dyn Signer>,
}

/// A client configuration whose client certificate key is a [`Signer`]
/// (a KeyManager or HSM key that never leaves its store), trusting the
/// server as `trust` says and requiring its SPIFFE ID to be `server_id`.
pub fn client_config_with_signer(
    trust: &ServerTrust,
    server_id: SpiffeId,
    identity: Option<SignerIdentity>,
) -> Result<ClientConfig, CryptoError> {
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::Bundle(roots) => Arc::new(SpiffeServerVerifier::new(
            roots,
            ServerIdPolicy::Exact(server_id),
        )?),
        ServerTrust::InsecureBootstrap => Arc::new(InsecureBootstrapVerifier {
            server_id,
            algorithms: provider().signature_verification_algorithms,
        }),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => {
            let key: Arc<dyn SigningKey> = Arc::new(SignerKey {
                signer: identity.key,
            });
            let chain = identity
                .chain
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(
                CertifiedKey::new(chain, key),
            ))))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Accepts any server chain whose leaf carries the server's SPIFFE ID.
#[derive(Debug)]
struct InsecureBootstrapVerifier {
    server_id: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureBootstrapVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let other = |e: CryptoError| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        };
        let id = leaf_spiffe_id(end_entity).map_err(other)?;
        ServerIdPolicy::Exact(self.server_id.clone())
            .check(&id)
            .map_err(other)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Always presents the one agent SVID.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.key.choose_scheme(sigschemes).map(|_| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A [`Signer`] (KeyManager key) as a rustls signing key. TLS 1.3 signs
/// with ECDSA or RSA-PSS only; our signers do ECDSA and RSA PKCS#1 v1.5, so
/// agent keys are EC (as SPIRE's are).
#[derive(Debug)]
struct SignerKey {
    signer: Arc<dyn Signer>,
}

impl SignerKey {
    fn scheme(&self) -> Option<SignatureScheme> {
        match self.signer.key_type() {
            KeyType::EcP256 => Some(SignatureScheme::ECDSA_NISTP256_SHA256),
            KeyType::EcP384 => Some(SignatureScheme::ECDSA_NISTP384_SHA384),
            KeyType::Rsa2048 | KeyType::Rsa4096 => None,
        }
    }
}

impl SigningKey for SignerKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let scheme = self.scheme()?;
        offered.contains(&scheme).then(|| {
            Box::new(SchemeSigner {
                signer: self.signer.clone(),
                scheme,
            }) as Box<dyn rustls::sign::Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.signer.key_type() {
            KeyType::EcP256 | KeyType::EcP384 => SignatureAlgorithm::ECDSA,
            KeyType::Rsa2048 | KeyType::Rsa4096 => SignatureAlgorithm::RSA,
        }
    }
}

#[derive(Debug)]
struct SchemeSigner {
    signer: Arc<dyn Signer>,
    scheme: SignatureScheme,
}

impl rustls::sign::Signer for SchemeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.signer
            .sign(message)
            .map_err(|e| rustls::Error::General(format!("agent key: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Server certificate "verifier" that accepts any certificate. The handshake
/// signatures are still checked, so the peer holds the key of the
/// certificate it sent, but nothing says who that peer is.
///
/// Only for an operator's explicit opt-out, such as SPIRE's
/// `skip_kubelet_verification`.
#[derive(Debug)]
pub struct UnverifiedServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl UnverifiedServer {
    /// The verifier, with the aws-lc-rs signature algorithms.
    pub fn new() -> Self {
        UnverifiedServer {
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl Default for UnverifiedServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for UnverifiedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyType;
    use crate::testutil::{self, TestCa, TestSvid};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    struct Outcome {
        client: Result<Option<Vec<u8>>, std::io::Error>,
        server_peer_id: Result<Option<SpiffeId>, std::io::Error>,
    }

    /// Runs one handshake plus a one-byte exchange over an in-memory pipe.
    /// Returns the client's negotiated ALPN and the client ID the server saw.
    async fn handshake(server: ServerConfig, client: ClientConfig) -> Outcome {
        let (c_io, s_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(client));
        let server_task = tokio::spawn(async move {
            let mut tls = acceptor.accept(s_io).await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            tls.write_all(b"!").await?;
            tls.flush().await?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| peer_spiffe_id(c).map_err(std::io::Error::other))
                .transpose()?;
            Ok::<_, std::io::Error>(peer)
        });
        let name = ServerName::try_from("ignored.invalid").unwrap();
        let client = async {
            let mut tls = connector.connect(name, c_io).await?;
            tls.write_all(b"?").await?;
            tls.flush().await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            Ok::<_, std::io::Error>(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        }
        .await;
        let server_peer_id = server_task.await.unwrap();
        Outcome {
            client,
            server_peer_id,
        }
    }

    struct World {
        ca: TestCa,
        server: TestSvid,
        client: TestSvid,
    }

    fn world() -> World {
        let ca = testutil::ca("example.org", KeyType::EcP256);
        let server = testutil::svid(&ca, "spiffe://example.org/server", KeyType::EcP256);
        let client = testutil::svid(&ca, "spiffe://example.org/client", KeyType::EcP384);
        World { ca, server, client }
    }

    fn server_cfg(w: &World, auth: ClientAuth) -> ServerConfig {
        server_config(
            vec![w.server.cert.clone()],
            w.server.pkcs8(),
            vec![w.ca.cert.clone()],
            auth,
        )
        .unwrap()
    }

    fn client_identity(w: &World) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
        Some((vec![w.client.cert.clone()], w.client.pkcs8()))
    }

    #[test]
    fn provider_offers_x25519mlkem768_first() {
        let p = provider();
        assert_eq!(
            p.kx_groups[0].name(),
            rustls::NamedGroup::X25519MLKEM768,
            "post-quantum hybrid must be preferred"
        );
    }

    #[tokio::test]
    async fn mtls_handshake_succeeds_and_server_reads_client_spiffe_id() {
        let w = world();
        let client = client_config(
            vec![w.ca.cert.clone()],
            SpiffeId::parse("spiffe://example.org/server").unwrap(),
            client_identity(&w),
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Required), client).await;
        assert_eq!(out.client.unwrap(), Some(b"h2".to_vec()));
        assert_eq!(
            out.server_peer_id.unwrap().unwrap().as_str(),
            "spiffe://example.org/client"
        );
    }

    #[tokio::test]
    async fn wrong_expected_server_id_fails_the_handshake() {
        let w = world();
        let client = client_config(
            vec![w.ca.cert.clone()],
            SpiffeId::parse("spiffe://example.org/not-the-server").unwrap(),
            client_identity(&w),
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Required), client).await;
        let err = out.client.unwrap_err().to_string();
        assert!(err.contains("spiffe://example.org/server"), "{err}");
        assert!(err.contains("not-the-server"), "{err}");
        assert!(out.server_peer_id.is_err());
    }

    #[tokio::test]
    async fn member_of_policy_accepts_same_domain_and_rejects_other() {
        let w = world();
        let ok = client_config_with_policy(
            vec![w.ca.cert.clone()],
            ServerIdPolicy::MemberOf(TrustDomain::new("example.org").unwrap()),
            None,
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Optional), ok).await;
        assert!(out.client.is_ok());
        assert_eq!(out.server_peer_id.unwrap(), None);

        let other = client_config_with_policy(
            vec![w.ca.cert.clone()],
            ServerIdPolicy::MemberOf(TrustDomain::new("other.org").unwrap()),
            None,
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Optional), other).await;
        assert!(out.client.is_err());
    }

    #[tokio::test]
    async fn untrusted_server_is_rejected() {
        let w = world();
        let stranger = testutil::ca("example.org", KeyType::EcP256);
        let client = client_config(
            vec![stranger.cert.clone()],
            SpiffeId::parse("spiffe://example.org/server").unwrap(),
            None,
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Optional), client).await;
        // Same CA subject, different key: rustls reports the bad signature.
        let err = out.client.unwrap_err().to_string();
        assert!(err.contains("invalid peer certificate"), "{err}");
    }

    #[tokio::test]
    async fn required_client_auth_rejects_a_client_without_certificate() {
        let w = world();
        let client = client_config(
            vec![w.ca.cert.clone()],
            SpiffeId::parse("spiffe://example.org/server").unwrap(),
            None,
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Required), client).await;
        let err = out.server_peer_id.unwrap_err().to_string();
        assert!(err.contains("peer sent no certificates"), "{err}");
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_rejected() {
        let w = world();
        let stranger = testutil::ca("example.org", KeyType::EcP256);
        let rogue = testutil::svid(&stranger, "spiffe://example.org/client", KeyType::EcP256);
        let client = client_config(
            vec![w.ca.cert.clone()],
            SpiffeId::parse("spiffe://example.org/server").unwrap(),
            Some((vec![rogue.cert.clone()], rogue.pkcs8())),
        )
        .unwrap();
        let out = handshake(server_cfg(&w, ClientAuth::Optional), client).await;
        assert!(out.server_peer_id.is_err());
    }

    #[tokio::test]
    async fn handshake_over_tcp_loopback_with_rsa_server() {
        let ca = testutil::ca("example.org", KeyType::Rsa2048);
        let server_svid = testutil::svid(&ca, "spiffe://example.org/server", KeyType::Rsa2048);
        let client_svid = testutil::svid(&ca, "spiffe://example.org/agent", KeyType::EcP256);
        let server = server_config(
            vec![server_svid.cert.clone()],
            server_svid.pkcs8(),
            vec![ca.cert.clone()],
            ClientAuth::Required,
        )
        .unwrap();
        let client = client_config(
            vec![ca.cert.clone()],
            SpiffeId::parse("spiffe://example.org/server").unwrap(),
            Some((vec![client_svid.cert.clone()], client_svid.pkcs8())),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tls.write_all(b"hi").await.unwrap();
            tls.shutdown().await.unwrap();
            let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            peer_spiffe_id(&cert).unwrap()
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi");
        assert_eq!(
            tls.get_ref()
                .1
                .negotiated_key_exchange_group()
                .unwrap()
                .name(),
            rustls::NamedGroup::X25519MLKEM768
        );
        assert_eq!(
            server_task.await.unwrap().as_str(),
            "spiffe://example.org/agent"
        );
    }

    #[test]
    fn config_builders_reject_empty_or_bad_roots() {
        let w = world();
        assert!(matches!(
            server_config(
                vec![w.server.cert.clone()],
                w.server.pkcs8(),
                vec![],
                ClientAuth::Required
            ),
            Err(CryptoError::EmptyInput { .. })
        ));
        assert!(
            server_config(
                vec![w.server.cert.clone()],
                w.server.pkcs8(),
                vec![],
                ClientAuth::None
            )
            .is_ok()
        );
        assert!(matches!(
            client_config(
                vec![],
                SpiffeId::parse("spiffe://example.org/server").unwrap(),
                None
            ),
            Err(CryptoError::EmptyInput { .. })
        ));
        assert!(matches!(
            client_config(
                vec![b"junk".to_vec()],
                SpiffeId::parse("spiffe://example.org/server").unwrap(),
                None
            ),
            Err(CryptoError::CertificateParse { index: Some(0), .. })
        ));
        // A key that does not match the certificate is refused up front.
        assert!(matches!(
            server_config(
                vec![w.server.cert.clone()],
                w.client.pkcs8(),
                vec![],
                ClientAuth::None
            ),
            Err(CryptoError::TlsConfig { .. })
        ));
    }

    #[test]
    fn server_id_policy_messages_name_both_sides() {
        let id = SpiffeId::parse("spiffe://a.org/x").unwrap();
        let err = ServerIdPolicy::MemberOf(TrustDomain::new("b.org").unwrap())
            .check(&id)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spiffe://a.org/x") && err.contains("b.org"),
            "{err}"
        );
        assert!(ServerIdPolicy::Exact(id.clone()).check(&id).is_ok());
    }
}
