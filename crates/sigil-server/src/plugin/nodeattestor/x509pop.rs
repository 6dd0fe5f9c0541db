//! NodeAttestor "x509pop" (server half): the agent presents a certificate
//! chain that must lead to one of the configured CAs, then proves it holds
//! the leaf's private key by signing a fresh nonce (SPIRE's
//! `pkg/server/plugin/nodeattestor/x509pop`). The same certificate can
//! attest again, so agents re-attest by themselves. The protocol itself
//! lives in `sigil_plugin::nodeattestor::x509pop`; this file owns the
//! options, the CA bundle and chain verification.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_plugin::catalog::{PluginError, Problem, decode};
use sigil_plugin::clock::Clock;
use sigil_plugin::nodeattestor::x509pop::{
    self as pop, AgentPathTemplate, AttestationData, NodeCert, PopKey, Response, TemplateData,
};
use sigil_plugin::nodeattestor::{AttestResult, Challenges, NodeAttestorError, ServerNodeAttestor};
use sigil_spiffe::TrustDomain;

use crate::catalog::ServerContext;

/// The plugin name and attestation data type.
pub const NAME: &str = pop::NAME;

const DEFAULT_MAX_INTERMEDIATES: usize = 4;
const DEFAULT_MAX_RSA_KEY_SIZE: usize = 8192;

/// Builds the server half from `plugin_data`, reading the CA bundle files.
pub fn build(
    data: &serde_json::Value,
    ctx: &ServerContext,
) -> Result<Arc<dyn ServerNodeAttestor>, PluginError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        ca_bundle_path: Option<String>,
        #[serde(default)]
        ca_bundle_paths: Option<Vec<String>>,
        #[serde(default)]
        agent_path_template: Option<String>,
        #[serde(default)]
        max_intermediates: Option<i64>,
        #[serde(default)]
        max_rsa_key_size: Option<i64>,
        #[serde(default)]
        verify_client_ip: Option<bool>,
    }
    let err = |problem| PluginError::new("NodeAttestor", NAME, problem);
    // `spiffe_prefix` only matters in spiffe mode, which sigil lacks; SPIRE's
    // documentation calls it `svid_prefix`.
    let o: Options = decode(
        "NodeAttestor",
        NAME,
        data,
        &["spiffe_prefix", "svid_prefix"],
    )?;
    match o.mode.as_deref().unwrap_or("external_pki") {
        "external_pki" => {}
        "spiffe" => {
            return Err(err(Problem::InvalidOption {
                option: "mode".into(),
                reason: "\"spiffe\" (node certificates issued by this server's own CA) is not \
                         supported by sigil yet; use \"external_pki\""
                    .into(),
            }));
        }
        other => {
            return Err(err(Problem::InvalidOption {
                option: "mode".into(),
                reason: format!("{other:?}: mode can only be either spiffe or external_pki"),
            }));
        }
    }
    if o.verify_client_ip == Some(true) {
        return Err(err(Problem::UnsupportedOption("verify_client_ip".into())));
    }
    let paths = match (o.ca_bundle_path, o.ca_bundle_paths) {
        (Some(_), Some(p)) if !p.is_empty() => {
            return Err(err(Problem::Invalid(
                "only one of ca_bundle_path or ca_bundle_paths can be configured, not both".into(),
            )));
        }
        (Some(p), _) if !p.is_empty() => vec![p],
        (_, Some(p)) if !p.is_empty() => p,
        _ => {
            return Err(err(Problem::Invalid(
                "one of ca_bundle_path or ca_bundle_paths must be configured".into(),
            )));
        }
    };
    let mut roots = Vec::new();
    for path in &paths {
        let certs = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| sigil_crypto::parse_pem_certs(&pem).map_err(|e| e.to_string()))
            .map_err(|e| {
                err(Problem::Load(format!(
                    "unable to load trust bundle {path:?}: {e}"
                )))
            })?;
        roots.extend(certs);
    }
    let template_text = o
        .agent_path_template
        .unwrap_or_else(|| AgentPathTemplate::DEFAULT_EXTERNAL_PKI.to_owned());
    let template = AgentPathTemplate::parse(&template_text).map_err(|e| {
        err(Problem::InvalidOption {
            option: "agent_path_template".into(),
            reason: format!("failed to parse agent svid template {template_text:?}: {e}"),
        })
    })?;
    let positive = |name: &str, v: Option<i64>, default: usize| match v {
        None => Ok(default),
        Some(n) if n > 0 => usize::try_from(n).map_err(|_| {
            err(Problem::InvalidOption {
                option: name.into(),
                reason: format!("{n} is too large"),
            })
        }),
        Some(_) => Err(err(Problem::InvalidOption {
            option: name.into(),
            reason: format!("{name} must be greater than 0"),
        })),
    };
    Ok(Arc::new(X509PopAttestor {
        td: ctx.trust_domain.clone(),
        roots,
        template,
        max_intermediates: positive(
            "max_intermediates",
            o.max_intermediates,
            DEFAULT_MAX_INTERMEDIATES,
        )?,
        max_rsa_key_size: positive(
            "max_rsa_key_size",
            o.max_rsa_key_size,
            DEFAULT_MAX_RSA_KEY_SIZE,
        )?,
        clock: ctx.clock.clone(),
    }))
}

/// The server half.
#[derive(Debug)]
pub struct X509PopAttestor {
    td: TrustDomain,
    roots: Vec<Vec<u8>>,
    template: AgentPathTemplate,
    max_intermediates: usize,
    max_rsa_key_size: usize,
    clock: Arc<dyn Clock>,
}

impl X509PopAttestor {
    fn check_rsa_size(&self, cert: &NodeCert) -> bool {
        !matches!(cert.key, PopKey::Rsa { bits } if bits > self.max_rsa_key_size)
    }
}

#[async_trait]
impl ServerNodeAttestor for X509PopAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn attest(
        &self,
        payload: &[u8],
        challenges: &mut dyn Challenges,
    ) -> Result<AttestResult, NodeAttestorError> {
        let invalid = |m: String| NodeAttestorError::Invalid(m);
        if payload.is_empty() {
            return Err(invalid("missing attestation payload".into()));
        }
        let data: AttestationData = serde_json::from_slice(payload)
            .map_err(|e| invalid(format!("failed to unmarshal data: {e}")))?;
        let Some((leaf_der, intermediates)) = data.certificates.split_first() else {
            return Err(invalid("no certificate to attest".into()));
        };
        // Count before parsing, so a flood of certificates costs nothing.
        if intermediates.len() > self.max_intermediates {
            return Err(invalid("too many intermediate certificates".into()));
        }
        let leaf = NodeCert::parse(leaf_der, "leaf certificate")?;
        if !self.check_rsa_size(&leaf) {
            return Err(invalid("leaf certificate key size too large".into()));
        }
        for (i, der) in intermediates.iter().enumerate() {
            let cert = NodeCert::parse(der, &format!("intermediate certificate {i}"))?;
            if !self.check_rsa_size(&cert) {
                return Err(invalid(format!(
                    "intermediate certificate {i} key size too large"
                )));
            }
        }
        let above =
            sigil_crypto::verify_chain_any_usage(&data.certificates, &self.roots, self.clock.now())
                .map_err(|e| {
                    NodeAttestorError::Denied(format!("certificate verification failed: {e}"))
                })?;

        // The chain is trusted; now the agent must prove it holds the key.
        let challenge = pop::generate_challenge(&leaf)?;
        let challenge_bytes = serde_json::to_vec(&challenge).map_err(|e| {
            NodeAttestorError::Internal(format!("unable to marshal challenge: {e}"))
        })?;
        let answer = challenges.challenge(challenge_bytes).await?;
        let response: Response = serde_json::from_slice(&answer)
            .map_err(|e| invalid(format!("unable to unmarshal challenge response: {e}")))?;
        pop::verify_response(&leaf, &challenge, &response)?;

        let sans = pop::san_selectors(&leaf, &self.td);
        let agent_id = pop::agent_id(
            &self.template,
            &TemplateData {
                leaf: &leaf,
                trust_domain: &self.td,
                svid_path_trimmed: "",
                uri_san_selectors: &sans,
            },
        )?;
        Ok(AttestResult {
            agent_id,
            selectors: pop::selectors(&leaf, &above, &sans),
            can_reattest: true,
            join_token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use sigil_crypto::{KeyType, SoftwareKey};
    use sigil_plugin::clock::SystemClock;
    use sigil_plugin::nodeattestor::conformance::{Pair, run_all};
    use sigil_plugin::nodeattestor::x509pop::{Credentials, X509PopAgent};
    use sigil_plugin::nodeattestor::{AgentNodeAttestor, DirectChallenges};

    use super::*;

    fn rc(key: &SoftwareKey) -> KeyPair {
        KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap()
    }

    /// A test CA that issues node certificates.
    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        der: Vec<u8>,
    }

    impl Ca {
        fn new(cn: &str) -> Ca {
            let key = rc(&SoftwareKey::generate(KeyType::EcP256).unwrap());
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let der = params.self_signed(&key).unwrap().der().to_vec();
            Ca { params, key, der }
        }

        fn issue(&self, cn: &str, key: &SoftwareKey) -> Vec<u8> {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let issuer = Issuer::from_params(&self.params, &self.key);
            p.signed_by(&rc(key), &issuer).unwrap().der().to_vec()
        }

        fn write(&self, dir: &Path) -> String {
            let path = dir.join("ca.pem");
            std::fs::write(
                &path,
                sigil_crypto::pem_encode_certs(std::slice::from_ref(&self.der)),
            )
            .unwrap();
            path.display().to_string()
        }
    }

    fn ctx() -> ServerContext {
        ServerContext {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            data_dir: std::env::temp_dir(),
            clock: Arc::new(SystemClock),
            join_tokens: Arc::new(NoTokens),
        }
    }

    #[derive(Debug)]
    struct NoTokens;

    #[async_trait]
    impl sigil_plugin::nodeattestor::JoinTokens for NoTokens {
        async fn expiry(&self, _: &str) -> Result<Option<i64>, NodeAttestorError> {
            Ok(None)
        }
    }

    fn agent(chain: Vec<Vec<u8>>, key: SoftwareKey) -> Arc<dyn AgentNodeAttestor> {
        Arc::new(X509PopAgent::new(Credentials {
            chain,
            key: Arc::new(key),
        }))
    }

    #[tokio::test]
    async fn x509pop_passes_the_node_attestor_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("node CA");
        let server = build(
            &serde_json::json!({"ca_bundle_path": ca.write(dir.path())}),
            &ctx(),
        )
        .unwrap();
        let node_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let node_cert = ca.issue("node-1", &node_key);
        let stranger_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let stranger = Ca::new("other CA").issue("node-1", &stranger_key);
        let pair = Pair {
            trust_domain: TrustDomain::new("example.org").unwrap(),
            server,
            agent: agent(vec![node_cert.clone()], node_key),
            refused: vec![
                agent(vec![stranger], stranger_key),
                agent(
                    vec![node_cert.clone()],
                    SoftwareKey::generate(KeyType::EcP256).unwrap(),
                ),
            ],
        };
        let r = run_all(&pair).await;
        assert_eq!(
            r.agent_id.as_str(),
            format!(
                "spiffe://example.org/spire/agent/x509pop/{}",
                pop::fingerprint(&node_cert)
            )
        );
        assert!(r.can_reattest);
        let sel: Vec<String> = r.selectors.iter().map(|s| s.to_string()).collect();
        assert!(
            sel.contains(&"x509pop:subject:cn:node-1".to_owned()),
            "{sel:?}"
        );
        assert!(
            sel.contains(&format!(
                "x509pop:ca:fingerprint:{}",
                pop::fingerprint(&ca.der)
            )),
            "{sel:?}"
        );
    }

    async fn attest(
        server: &dyn ServerNodeAttestor,
        agent: &dyn AgentNodeAttestor,
    ) -> Result<AttestResult, NodeAttestorError> {
        let payload = agent.payload().await?;
        server
            .attest(&payload, &mut DirectChallenges::new(agent))
            .await
    }

    #[tokio::test]
    async fn refusals_say_why_as_spire_does() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("node CA");
        let server = build(
            &serde_json::json!({"ca_bundle_paths": [ca.write(dir.path())]}),
            &ctx(),
        )
        .unwrap();
        let key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let other_key = SoftwareKey::generate(KeyType::EcP256).unwrap();
        let stranger = Ca::new("other CA").issue("n", &other_key);
        let e = attest(server.as_ref(), agent(vec![stranger], other_key).as_ref())
            .await
            .unwrap_err();
        assert!(matches!(e, NodeAttestorError::Denied(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("certificate verification failed: "),
            "{e}"
        );
        let cert = ca.issue("n", &key);
        let wrong = agent(vec![cert], SoftwareKey::generate(KeyType::EcP256).unwrap());
        let e = attest(server.as_ref(), wrong.as_ref()).await.unwrap_err();
        assert_eq!(
            e,
            NodeAttestorError::Denied(
                "challenge response verification failed: ECDSA signature verify failed".into()
            )
        );
        let mut ch = DirectChallenges::new(wrong.as_ref());
        let e = server.attest(b"{", &mut ch).await.unwrap_err();
        assert!(
            e.to_string().starts_with("failed to unmarshal data: "),
            "{e}"
        );
        let e = server
            .attest(b"{\"certificates\":[]}", &mut ch)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no certificate to attest");
        let many = serde_json::to_vec(&AttestationData {
            certificates: vec![vec![1]; 6],
        })
        .unwrap();
        let e = server.attest(&many, &mut ch).await.unwrap_err();
        assert_eq!(e.to_string(), "too many intermediate certificates");
        assert_eq!(ch.rounds, 0, "no challenge before the chain is trusted");
    }

    #[tokio::test]
    async fn rsa_nodes_with_an_intermediate_attest_and_get_a_templated_id() {
        let dir = tempfile::tempdir().unwrap();
        let root = Ca::new("root");
        let ikey = rc(&SoftwareKey::generate(KeyType::EcP256).unwrap());
        let mut ip = CertificateParams::new(Vec::<String>::new()).unwrap();
        ip.distinguished_name
            .push(DnType::CommonName, "intermediate");
        ip.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ider = ip
            .signed_by(&ikey, &Issuer::from_params(&root.params, &root.key))
            .unwrap()
            .der()
            .to_vec();
        let inter = Ca {
            params: ip,
            key: ikey,
            der: ider.clone(),
        };
        let key = SoftwareKey::generate(KeyType::Rsa2048).unwrap();
        let leaf = inter.issue("rsa-node", &key);
        let server = build(
            &serde_json::json!({
                "ca_bundle_path": root.write(dir.path()),
                "agent_path_template": "/cn/{{ .Subject.CommonName }}",
            }),
            &ctx(),
        )
        .unwrap();
        let r = attest(
            server.as_ref(),
            agent(vec![leaf, ider.clone()], key).as_ref(),
        )
        .await
        .unwrap();
        assert_eq!(
            r.agent_id.as_str(),
            "spiffe://example.org/spire/agent/cn/rsa-node"
        );
        let sel: Vec<String> = r.selectors.iter().map(|s| s.to_string()).collect();
        for ca in [&ider, &root.der] {
            let want = format!("x509pop:ca:fingerprint:{}", pop::fingerprint(ca));
            assert!(sel.contains(&want), "{sel:?} lacks {want}");
        }
    }

    #[test]
    fn options_are_checked_when_the_catalog_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("node CA").write(dir.path());
        let problem = |v: serde_json::Value| build(&v, &ctx()).unwrap_err().to_string();
        assert_eq!(
            problem(serde_json::json!({})),
            "NodeAttestor \"x509pop\": one of ca_bundle_path or ca_bundle_paths must be configured"
        );
        assert!(
            problem(serde_json::json!({"ca_bundle_path": ca, "ca_bundle_paths": [ca]}))
                .contains("not both")
        );
        assert!(
            problem(serde_json::json!({"ca_bundle_path": "/nonexistent/ca.pem"}))
                .contains("unable to load trust bundle \"/nonexistent/ca.pem\"")
        );
        let e = problem(serde_json::json!({"mode": "spiffe"}));
        assert!(e.contains("not supported by sigil yet"), "{e}");
        assert!(problem(serde_json::json!({"mode": "x", "ca_bundle_path": ca})).contains("mode"));
        assert!(
            problem(serde_json::json!({"ca_bundle_path": ca, "spiffe_prefix": "/x"}))
                .contains("not supported by sigil yet")
        );
        assert!(
            problem(serde_json::json!({"ca_bundle_path": ca, "max_intermediates": 0}))
                .contains("max_intermediates must be greater than 0")
        );
        assert!(
            problem(serde_json::json!({"ca_bundle_path": ca, "agent_path_template": "/{{ .X }}"}))
                .contains("agent_path_template")
        );
        assert!(
            problem(serde_json::json!({"ca_bundle_path": ca, "colour": 1}))
                .contains("unknown option \"colour\"")
        );
        build(
            &serde_json::json!({"ca_bundle_path": ca, "mode": "external_pki", "max_rsa_key_size": 4096, "verify_client_ip": false}),
            &ctx(),
        )
        .unwrap();
    }
}
