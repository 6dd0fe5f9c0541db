//! NodeAttestor "x509pop" (agent half): presents the node's certificate
//! chain and proves it holds the private key (SPIRE's
//! `pkg/agent/plugin/nodeattestor/x509pop`). The files are read again for
//! every attestation, so a node certificate rotated on disk is the one the
//! next re-attestation presents. The protocol and the in-memory agent half
//! live in `sigil_plugin::nodeattestor::x509pop`; this file owns the
//! options and the files.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_plugin::nodeattestor::x509pop::{self as pop, Credentials, X509PopAgent};
use sigil_plugin::nodeattestor::{AgentNodeAttestor, NodeAttestorError};

use crate::catalog::AgentContext;

/// The plugin name and attestation data type.
pub const NAME: &str = pop::NAME;

/// Builds the agent half, loading the files once to report problems at
/// startup as SPIRE does.
pub fn build(
    data: &serde_json::Value,
    _ctx: &AgentContext,
) -> Result<Arc<dyn AgentNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        private_key_path: String,
        #[serde(default)]
        certificate_path: String,
        #[serde(default)]
        intermediates_path: String,
    }
    let err = |problem| PluginError::new("NodeAttestor", NAME, problem);
    let o: Options = decode("NodeAttestor", NAME, data, &["spiffe_endpoint_socket"])?;
    if o.private_key_path.is_empty() {
        return Err(err(Problem::MissingOption("private_key_path".into())));
    }
    if o.certificate_path.is_empty() {
        return Err(err(Problem::MissingOption("certificate_path".into())));
    }
    let files = Files {
        key: o.private_key_path.into(),
        certificates: o.certificate_path.into(),
        intermediates: Some(o.intermediates_path)
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from),
    };
    let creds = files
        .load()
        .map_err(|e| err(Problem::Load(e.to_string())))?;
    Ok(Arc::new(X509PopFileAgent {
        files,
        inner: X509PopAgent::new(creds),
    }))
}

/// Where the node's credentials live.
#[derive(Debug, Clone)]
struct Files {
    key: PathBuf,
    certificates: PathBuf,
    intermediates: Option<PathBuf>,
}

impl Files {
    fn load(&self) -> Result<Credentials, NodeAttestorError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| {
                NodeAttestorError::NoEvidence(format!("unable to read {}: {e}", p.display()))
            })
        };
        let certificates = read(&self.certificates)?;
        let key = read(&self.key)?;
        let intermediates = self.intermediates.as_ref().map(read).transpose()?;
        Credentials::from_pem(&certificates, &key, intermediates.as_deref())
    }
}

/// The agent half over files.
#[derive(Debug)]
pub struct X509PopFileAgent {
    files: Files,
    inner: X509PopAgent,
}

#[async_trait]
impl AgentNodeAttestor for X509PopFileAgent {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        let files = self.files.clone();
        let creds = tokio::task::spawn_blocking(move || files.load())
            .await
            .map_err(|e| NodeAttestorError::Internal(format!("loading credentials: {e}")))??;
        // The challenge that follows is answered with these same credentials.
        self.inner.set(creds);
        self.inner.payload().await
    }

    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        self.inner.respond(challenge).await
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose};
    use sigil_crypto::{KeyType, SoftwareKey};
    use sigil_spiffe::TrustDomain;

    use super::*;

    fn ctx() -> AgentContext {
        AgentContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            join_token: None,
        }
    }

    fn self_signed(cn: &str, key: &SoftwareKey) -> String {
        let rk = KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.self_signed(&rk).unwrap().pem()
    }

    #[tokio::test]
    async fn the_payload_carries_the_certificate_on_disk_now() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("node.crt"), dir.path().join("node.key"));
        let k1 = SoftwareKey::generate(KeyType::EcP256).unwrap();
        std::fs::write(&cert, self_signed("one", &k1)).unwrap();
        std::fs::write(&key, k1.to_pkcs8_pem()).unwrap();
        let agent = build(
            &serde_json::json!({
                "private_key_path": key.display().to_string(),
                "certificate_path": cert.display().to_string(),
            }),
            &ctx(),
        )
        .unwrap();
        let first: pop::AttestationData =
            serde_json::from_slice(&agent.payload().await.unwrap()).unwrap();
        // Rotate the node certificate and key on disk.
        let k2 = SoftwareKey::generate(KeyType::Rsa2048).unwrap();
        std::fs::write(&cert, self_signed("two", &k2)).unwrap();
        std::fs::write(&key, k2.to_pkcs8_pem()).unwrap();
        let second: pop::AttestationData =
            serde_json::from_slice(&agent.payload().await.unwrap()).unwrap();
        assert_ne!(first.certificates, second.certificates);
        let leaf = pop::NodeCert::parse(&second.certificates[0], "leaf").unwrap();
        assert_eq!(leaf.common_name.as_deref(), Some("two"));
        // The answer is made with the rotated key.
        let challenge = pop::generate_challenge(&leaf).unwrap();
        let answer = agent
            .respond(&serde_json::to_vec(&challenge).unwrap())
            .await
            .unwrap();
        let response: pop::Response = serde_json::from_slice(&answer).unwrap();
        pop::verify_response(&leaf, &challenge, &response).unwrap();
    }

    #[test]
    fn missing_or_unusable_files_are_startup_errors() {
        let problem = |v: serde_json::Value| build(&v, &ctx()).unwrap_err().to_string();
        assert_eq!(
            problem(serde_json::json!({"certificate_path": "/x"})),
            "NodeAttestor \"x509pop\": \"private_key_path\" must be set in plugin_data"
        );
        assert!(
            problem(serde_json::json!({"private_key_path": "/nope.key", "certificate_path": "/nope.crt"}))
                .contains("unable to read /nope.crt")
        );
        assert!(
            problem(serde_json::json!({"spiffe_endpoint_socket": "/s"}))
                .contains("not supported by sigil yet")
        );
    }
}
