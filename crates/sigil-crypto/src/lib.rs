//! Keys, signing, certificates, CSRs, JWTs and rustls configurations for sigil.
//!
//! One crypto provider everywhere: aws-lc-rs (through rcgen, rustls and
//! rustls-webpki); `ring` is never compiled in. Everything that signs takes a
//! `&dyn` [`Signer`], so keys kept in an HSM or TPM plug in by implementing
//! that trait. This crate performs no I/O: callers read and write files.
//!
//! Modules: [`key`] (key types, `Signer`, software keys), [`x509`] (CA and
//! SVID certificates, parsing, path validation), [`csr`] (PKCS#10), [`jwt`]
//! (JWS signing and verification), [`tls`] (rustls configs with SPIFFE-ID
//! verification).
#![forbid(unsafe_code)]

mod error;
mod spki;

pub mod csr;
pub mod jwt;
pub mod key;
pub mod pkix;
pub mod tls;
pub mod x509;

#[cfg(test)]
mod testutil;

pub use csr::{Csr, create_csr, parse_and_verify_csr};
pub use error::CryptoError;
pub use jwt::{AwsLcJwtVerifier, jwt_alg_for, sign_jwt, sign_jwt_svid, verify_jws_signature};
pub use key::{
    KeyType, Signer, SoftwareKey, ecdsa_der_to_fixed, ecdsa_fixed_to_der, parse_pem_or_der_key,
    verify_sha256_digest_signature,
};
pub use tls::{
    ClientAuth, ServerIdPolicy, SpiffeServerVerifier, client_config, client_config_with_policy,
    peer_spiffe_id, provider, server_config,
};
pub use x509::{
    CaSubject, CertInfo, IntermediateCaParams, X509SvidParams, cert_info, leaf_spiffe_id,
    parse_pem_certs, pem_encode_certs, self_signed_ca, sign_intermediate_ca, sign_x509_svid,
    verify_chain, verify_chain_any_usage,
};
