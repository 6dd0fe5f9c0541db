//! The CA journal: a JSON file (`journal_path`, in `data_dir`) recording
//! both slots of each kind of authority, so a restarted server with a
//! durable KeyManager keeps its CA (SPIRE's `ca/manager/journal.go`).
//!
//! It owns the file format, writing it (atomically, private to the server)
//! and restoring slots from it: an entry comes back only when the
//! KeyManager still holds its slot's key and that key is the one recorded
//! (the X.509 CA certificate's key; a JWT key published in the bundle under
//! its key ID). It never decides what goes in which slot beyond putting a
//! restored authority where its recorded state says.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sigil_plugin::clock::{from_unix, unix};

use super::authority::{JwtKey, ManagedAuthority, X509Ca};
use super::error::{CaError, JournalError};
use super::slot::SlotStatus;
use super::{CaManager, State};

#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    x509: Vec<X509JournalEntry>,
    jwt: Vec<JwtJournalEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct X509JournalEntry {
    slot: String,
    issued_at: i64,
    not_after: i64,
    cert: String,
    #[serde(default)]
    upstream_chain: Vec<String>,
    status: SlotStatus,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JwtJournalEntry {
    slot: String,
    kid: String,
    issued_at: i64,
    not_after: i64,
    status: SlotStatus,
}

impl CaManager {
    /// Restores the slots recorded in the journal whose keys the KeyManager
    /// still holds. A missing journal is a first start.
    pub(super) async fn load_journal(&self) -> Result<(), CaError> {
        let path = &self.cfg.journal_path;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.journal_err(JournalError::Read(e))),
        };
        let journal: Journal = serde_json::from_slice(&bytes)
            .map_err(|e| self.journal_err(JournalError::Format(e)))?;
        let mut st = self.state.write().await;
        for e in journal.x509 {
            if let Some(ca) = self.restore_x509(e).await? {
                st.x509.restore(ca);
            }
        }
        for e in journal.jwt {
            if let Some(key) = self.restore_jwt(e).await? {
                st.jwt.restore(key);
            }
        }
        Ok(())
    }

    async fn restore_x509(&self, e: X509JournalEntry) -> Result<Option<X509Ca>, CaError> {
        let Ok(cert_der) = STANDARD.decode(&e.cert) else {
            return Ok(None);
        };
        let Some(signer) = self.km.get_key(&X509Ca::key_name(&e.slot)).await? else {
            tracing::warn!(slot = %e.slot, "X509 CA key is gone from the KeyManager; slot dropped");
            return Ok(None);
        };
        let matches = sigil_crypto::x509::cert_info(&cert_der)
            .map(|i| i.public_key_der == signer.public_key_der())
            .unwrap_or(false);
        if !matches {
            tracing::warn!(slot = %e.slot, "X509 CA key does not match its journal entry; slot dropped");
            return Ok(None);
        }
        Ok(Some(X509Ca {
            slot: e.slot,
            cert_der,
            upstream_chain: e
                .upstream_chain
                .iter()
                .filter_map(|c| STANDARD.decode(c).ok())
                .collect(),
            signer,
            issued_at: from_unix(e.issued_at),
            not_after: from_unix(e.not_after),
            status: e.status,
        }))
    }

    async fn restore_jwt(&self, e: JwtJournalEntry) -> Result<Option<JwtKey>, CaError> {
        let Some(signer) = self.km.get_key(&JwtKey::key_name(&e.slot)).await? else {
            return Ok(None);
        };
        let in_bundle = self
            .bundle()
            .jwt_authorities
            .iter()
            .any(|a| a.key_id == e.kid && a.public_key_der == signer.public_key_der());
        if !in_bundle {
            tracing::warn!(slot = %e.slot, "JWT key not in the bundle; slot dropped");
            return Ok(None);
        }
        Ok(Some(JwtKey {
            slot: e.slot,
            kid: e.kid,
            signer,
            issued_at: from_unix(e.issued_at),
            not_after: from_unix(e.not_after),
            status: e.status,
        }))
    }

    /// Records both slots of each kind.
    pub(super) fn write_journal(&self, st: &State) -> Result<(), CaError> {
        let journal = Journal {
            x509: st
                .x509
                .both()
                .map(|c| X509JournalEntry {
                    slot: c.slot.clone(),
                    issued_at: unix(c.issued_at),
                    not_after: unix(c.not_after),
                    cert: STANDARD.encode(&c.cert_der),
                    upstream_chain: c
                        .upstream_chain
                        .iter()
                        .map(|d| STANDARD.encode(d))
                        .collect(),
                    status: c.status,
                })
                .collect(),
            jwt: st
                .jwt
                .both()
                .map(|k| JwtJournalEntry {
                    slot: k.slot.clone(),
                    kid: k.kid.clone(),
                    issued_at: unix(k.issued_at),
                    not_after: unix(k.not_after),
                    status: k.status,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&journal)
            .map_err(|e| self.journal_err(JournalError::Format(e)))?;
        sigil_cli::secure_fs::write_private_atomic(&self.cfg.journal_path, &bytes)
            .map_err(|e| self.journal_err(JournalError::Write(e)))
    }

    fn journal_err(&self, reason: JournalError) -> CaError {
        CaError::Journal {
            path: self.cfg.journal_path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[tokio::test]
    async fn restart_keeps_the_active_ca_with_a_durable_key_manager() {
        let f = fixture().await;
        let ca = start(&f).await;
        let before = ca.x509_ca().await.unwrap();
        let kid = ca.jwt_key().await.unwrap().kid;
        drop(ca);
        let ca = start(&f).await;
        assert_eq!(ca.x509_ca().await.unwrap().cert_der, before.cert_der);
        assert_eq!(ca.jwt_key().await.unwrap().kid, kid);
        assert_eq!(ca.bundle().x509_authorities.len(), 1, "no second CA minted");
    }

    #[tokio::test]
    async fn taints_and_the_old_slot_survive_a_restart() {
        let f = fixture().await;
        let ca = start(&f).await;
        let first = ca.x509_ca().await.unwrap();
        let next = ca.prepare_x509_now().await.unwrap();
        ca.activate_x509(&next.authority_id).await.unwrap();
        ca.taint_x509(&first.authority_id()).await.unwrap();
        drop(ca);
        let ca = start(&f).await;
        assert!(ca.bundle_taints().is_x509_tainted(&first.cert_der));
        let st = ca.x509_state().await;
        assert_eq!(st.active.unwrap().authority_id, next.authority_id);
        assert_eq!(st.old.unwrap().authority_id, first.authority_id());
        ca.revoke_x509(&first.authority_id()).await.unwrap();
    }
}
