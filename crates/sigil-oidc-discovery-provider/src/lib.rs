//! `sigil-oidc-discovery-provider`: SPIRE's OIDC discovery provider for
//! sigil (and SPIRE) trust domains. It reads SPIRE's
//! `oidc-discovery-provider.conf` unchanged and serves
//! `/.well-known/openid-configuration` and `/keys` (the JWKS of the trust
//! domain's JWT signing keys), so clouds, Vault and any OIDC-aware verifier
//! can check JWT-SVIDs knowing only the issuer URL.
//!
//! Modules: [`config`] (the file), [`domain`] (Host allow list), [`keys`]
//! (the published JWKS, built once per key-set change), [`source`] (polling
//! the server API or Workload API), [`handler`] (the endpoints), [`health`]
//! (probes), [`listen`] and [`tls`] (sockets, HTTPS), [`run`] (wiring).
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod handler;
pub mod health;
pub mod keys;
pub mod listen;
pub mod run;
pub mod source;
pub mod tls;
