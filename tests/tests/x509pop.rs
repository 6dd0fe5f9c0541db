//! x509pop node attestation with the real binaries: an agent holding a node
//! certificate from the CA the server trusts attests, serves a workload,
//! and after the server evicts it attests again by itself; an agent whose
//! certificate comes from another CA is refused and says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use sigil_e2e::my_uid;
use sigil_plugin::nodeattestor::x509pop::fingerprint;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// A CA for node certificates, as an operator's own PKI would have.
struct NodeCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl NodeCa {
    fn new(cn: &str) -> NodeCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let pem = params.self_signed(&key).unwrap().pem();
        NodeCa { params, key, pem }
    }

    /// Writes `<name>.crt` and `<name>.key` for a node with CN `cn`, and
    /// returns the certificate's DER.
    fn issue(&self, dir: &Path, name: &str, cn: &str) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }
}

fn agent_block(dir: &Path, name: &str) -> String {
    format!(
        r#"NodeAttestor "x509pop" {{
        plugin_data {{
            private_key_path = "{key}"
            certificate_path = "{crt}"
        }}
    }}"#,
        key = dir.join(format!("{name}.key")).display(),
        crt = dir.join(format!("{name}.crt")).display(),
    )
}

/// A trust domain whose server trusts `ca` for x509pop, with a node
/// certificate `node` written beside it.
fn setup(pki: &Path, ca: &NodeCa) -> TrustDomain {
    let bundle = pki.join("node-ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    TrustDomain::with(Options {
        server_extra_plugins: format!(
            r#"    NodeAttestor "x509pop" {{
        plugin_data {{
            ca_bundle_path = "{}"
        }}
    }}"#,
            bundle.display()
        ),
        agent_node_attestor: agent_block(pki, "node"),
        ..Options::default()
    })
}

fn pki_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sgpki")
        .tempdir_in("/tmp")
        .unwrap()
}

fn agent_listed(td: &TrustDomain, agent_id: &str) -> bool {
    let out = td.server_cli(&["agent", "list"]);
    out.code == 0 && out.stdout.contains(agent_id)
}

#[test]
fn x509pop_agent_serves_a_workload_and_reattests_by_itself_after_eviction() {
    let pki = pki_dir();
    let ca = NodeCa::new("node CA");
    let node = ca.issue(pki.path(), "node", "node-1");
    let mut td = setup(pki.path(), &ca);
    td.start_server();
    td.start_agent(0, None);

    let agent_id = format!(
        "spiffe://example.org/spire/agent/x509pop/{}",
        fingerprint(&node)
    );
    wait_for(
        "the x509pop agent in agent list",
        Duration::from_secs(30),
        || agent_listed(&td, &agent_id).then_some(()),
    );
    let show = td
        .server_cli(&["agent", "show", "-spiffeID", &agent_id])
        .ok();
    assert!(show.stdout.contains("x509pop"), "{}", show.stdout);

    let id = "spiffe://example.org/workload/x509pop";
    td.server_cli(&[
        "entry",
        "create",
        "-parentID",
        &agent_id,
        "-spiffeID",
        id,
        "-selector",
        &format!("unix:uid:{}", my_uid()),
    ])
    .ok();
    let fetch = |td: &TrustDomain| {
        let out = td.agent_cli(0, &["api", "fetch", "x509"]);
        (out.code == 0 && out.stdout.contains(id)).then_some(())
    };
    wait_for("the workload's X509-SVID", Duration::from_secs(30), || {
        fetch(&td)
    });

    td.server_cli(&["agent", "evict", "-spiffeID", &agent_id])
        .ok();
    assert!(!agent_listed(&td, &agent_id), "evicted");
    wait_for("the agent to attest again", Duration::from_secs(30), || {
        agent_listed(&td, &agent_id).then_some(())
    });
    assert_eq!(
        td.wait_agent_exit(0, Duration::from_secs(3)),
        None,
        "the agent keeps running after re-attesting"
    );
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    assert!(log.contains("re-attesting"), "{log}");
    wait_for(
        "the workload's X509-SVID after re-attestation",
        Duration::from_secs(30),
        || fetch(&td),
    );
}

#[test]
fn agent_with_a_certificate_from_another_ca_is_refused_and_says_why() {
    let pki = pki_dir();
    let ca = NodeCa::new("node CA");
    ca.issue(pki.path(), "node", "node-1");
    NodeCa::new("another CA").issue(pki.path(), "stranger", "node-1");
    let mut td = setup(pki.path(), &ca);
    td.start_server();
    td.opts.agent_node_attestor = agent_block(pki.path(), "stranger");
    let out = td.start_agent_expect_exit(0, None, Duration::from_secs(30));
    assert_ne!(out.code, 0);
    assert!(
        out.all().contains("certificate verification failed"),
        "{}",
        out.all()
    );
}
