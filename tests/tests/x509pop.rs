//! x509pop node attestation with the real binaries: an agent holding a node
//! certificate from the CA the server trusts attests, serves a workload,
//! and after the server evicts it attests again by itself; an agent whose
//! certificate comes from another CA is refused and says why.
//!
//! Interop with real SPIRE (`SIGIL_TEST_SPIRE_BIN`; without it the tests
//! print a skip line outside CI), both configured as SPIRE documents them,
//! for each node key type (EC P-256, EC P-384, RSA 2048), with and without
//! an intermediate CA:
//! - a real spire-agent attests to sigil-server and serves a workload;
//! - sigil-agent attests to a real spire-server and serves a workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use sigil_crypto::SoftwareKey;
use sigil_crypto::key::KeyType;
use sigil_e2e::my_uid;
use sigil_e2e::spire::{self, SpireAgent, SpireServer};
use sigil_plugin::nodeattestor::x509pop::fingerprint;
use sigil_testkit::{Options, TrustDomain, wait_for};

/// A CA for node certificates, as an operator's own PKI would have.
struct NodeCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
    /// The CAs between this one and the root, this one first, PEM (empty
    /// for a root).
    intermediates_pem: String,
}

fn rcgen_key(kt: KeyType) -> (KeyPair, SoftwareKey) {
    let key = SoftwareKey::generate(kt).unwrap();
    (
        KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap(),
        key,
    )
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params
}

impl NodeCa {
    fn new(cn: &str) -> NodeCa {
        let (key, _) = rcgen_key(KeyType::EcP256);
        let params = ca_params(cn);
        let pem = params.self_signed(&key).unwrap().pem();
        NodeCa {
            params,
            key,
            pem,
            intermediates_pem: String::new(),
        }
    }

    /// An intermediate CA under this one.
    fn intermediate(&self, cn: &str) -> NodeCa {
        let (key, _) = rcgen_key(KeyType::EcP256);
        let params = ca_params(cn);
        let pem = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap()
            .pem();
        NodeCa {
            params,
            key,
            intermediates_pem: format!("{pem}{}", self.intermediates_pem),
            pem,
        }
    }

    /// Writes `<name>.crt` and `<name>.key` for a node with CN `cn` and an
    /// EC P-256 key, and returns the certificate's DER.
    fn issue(&self, dir: &Path, name: &str, cn: &str) -> Vec<u8> {
        self.issue_key(dir, name, cn, KeyType::EcP256)
    }

    /// As [`NodeCa::issue`], with a `kt` key, serial 0x0ab12c (an odd
    /// number of hex digits, which the serial selector pads), and the URI SAN
    /// `x509pop://example.org/datacenter/eu-1`; writes
    /// `<name>-intermediates.pem` when this CA is not the root.
    fn issue_key(&self, dir: &Path, name: &str, cn: &str, kt: KeyType) -> Vec<u8> {
        let (key, soft) = rcgen_key(kt);
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.serial_number = Some(SerialNumber::from_slice(&[0x0a, 0xb1, 0x2c]));
        p.subject_alt_names = vec![SanType::URI(
            "x509pop://example.org/datacenter/eu-1".try_into().unwrap(),
        )];
        let cert = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), soft.to_pkcs8_pem()).unwrap();
        if !self.intermediates_pem.is_empty() {
            std::fs::write(
                dir.join(format!("{name}-intermediates.pem")),
                &self.intermediates_pem,
            )
            .unwrap();
        }
        cert.der().to_vec()
    }
}

/// The agent's NodeAttestor block, as SPIRE documents it; with
/// `intermediates_path` when `<name>-intermediates.pem` exists.
fn agent_block(dir: &Path, name: &str) -> String {
    let intermediates = dir.join(format!("{name}-intermediates.pem"));
    let intermediates = if intermediates.exists() {
        format!(
            "\n            intermediates_path = \"{}\"",
            intermediates.display()
        )
    } else {
        String::new()
    };
    format!(
        r#"NodeAttestor "x509pop" {{
        plugin_data {{
            private_key_path = "{key}"
            certificate_path = "{crt}"{intermediates}
        }}
    }}"#,
        key = dir.join(format!("{name}.key")).display(),
        crt = dir.join(format!("{name}.crt")).display(),
    )
}

/// The server's NodeAttestor block trusting `root` (written to
/// `node-ca.pem` in `pki`), as SPIRE documents it.
fn server_block(pki: &Path, root: &NodeCa) -> String {
    let bundle = pki.join("node-ca.pem");
    std::fs::write(&bundle, &root.pem).unwrap();
    format!(
        r#"    NodeAttestor "x509pop" {{
        plugin_data {{
            ca_bundle_path = "{}"
        }}
    }}"#,
        bundle.display()
    )
}

/// A trust domain whose server trusts `ca` for x509pop, with a node
/// certificate `node` written beside it.
fn setup(pki: &Path, ca: &NodeCa) -> TrustDomain {
    TrustDomain::with(Options {
        server_extra_plugins: server_block(pki, ca),
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

/// An agent whose node attestor can re-attest (x509pop) and whose SVID
/// expired while the server was down attests again by itself once the
/// server is back, and goes on serving workloads (SPIRE's agent re-attests
/// when its attestor allows it). Real server and agent.
#[test]
fn x509pop_agent_whose_svid_expired_in_an_outage_reattests_and_carries_on() {
    let pki = pki_dir();
    let ca = NodeCa::new("node CA");
    let node = ca.issue(pki.path(), "node", "node-1");
    let mut td = TrustDomain::with(Options {
        x509_svid_ttl: "10s".into(),
        server_extra_plugins: server_block(pki.path(), &ca),
        agent_node_attestor: agent_block(pki.path(), "node"),
        ..Options::default()
    });
    td.start_server();
    td.start_agent(0, None);
    let agent_id = format!(
        "spiffe://example.org/spire/agent/x509pop/{}",
        fingerprint(&node)
    );
    let id = "spiffe://example.org/workload/outage";
    wait_for("the agent in agent list", Duration::from_secs(30), || {
        agent_listed(&td, &agent_id).then_some(())
    });
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

    td.stop_server();
    // Longer than the agent SVID's whole lifetime.
    std::thread::sleep(Duration::from_secs(12));
    td.start_server();

    wait_for(
        "the workload's X509-SVID after the outage",
        Duration::from_secs(90),
        || fetch(&td),
    );
    assert_eq!(
        td.wait_agent_exit(0, Duration::from_secs(3)),
        None,
        "the agent keeps running"
    );
    let log = std::fs::read_to_string(td.path().join("agent0.log")).unwrap();
    assert!(log.contains("Agent SVID expired; re-attesting"), "{log}");
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

// ---------------------------------------------------------------------------
// Interop with real SPIRE.

/// A node PKI for one interop case: a root the server trusts, optionally an
/// intermediate CA, and a `node` certificate with a `kt` key. Returns the
/// root, the node certificate's DER and the fingerprints of the CAs above
/// the leaf.
fn interop_pki(pki: &Path, kt: KeyType, intermediate: bool) -> (NodeCa, Vec<u8>, Vec<String>) {
    let root = NodeCa::new("node root CA");
    let mut fps = vec![fingerprint(&pem_der(&root.pem))];
    let leaf = if intermediate {
        let mid = root.intermediate("node intermediate CA");
        fps.insert(0, fingerprint(&pem_der(&mid.pem)));
        mid.issue_key(pki, "node", "node-1", kt)
    } else {
        root.issue_key(pki, "node", "node-1", kt)
    };
    (root, leaf, fps)
}

fn pem_der(pem: &str) -> Vec<u8> {
    sigil_crypto::parse_pem_certs(pem.as_bytes())
        .unwrap()
        .remove(0)
}

/// The selectors both SPIRE and sigil give the interop node.
fn expected_selectors(ca_fingerprints: &[String]) -> Vec<String> {
    let mut want = vec![
        "x509pop:subject:cn:node-1".to_owned(),
        "x509pop:serialnumber:0ab12c".to_owned(),
        "x509pop:san:datacenter:eu-1".to_owned(),
    ];
    want.extend(
        ca_fingerprints
            .iter()
            .map(|fp| format!("x509pop:ca:fingerprint:{fp}")),
    );
    want
}

fn x509pop_agent_id(leaf: &[u8]) -> String {
    format!(
        "spiffe://example.org/spire/agent/x509pop/{}",
        fingerprint(leaf)
    )
}

/// A real spire-agent with an x509pop node certificate with a `kt` key
/// attests to sigil-server; a workload under it gets the SVID of an entry
/// parented to its x509pop agent ID.
fn spire_agent_attests_to_sigil_server(kt: KeyType, intermediate: bool) {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let pki = pki_dir();
    let (root, leaf, fps) = interop_pki(pki.path(), kt, intermediate);
    let mut td = setup(pki.path(), &root);
    td.start_server();
    let agent = SpireAgent::start(&mut td, &spire, &agent_block(pki.path(), "node"), &[]);

    let agent_id = x509pop_agent_id(&leaf);
    wait_for(
        "the spire-agent in agent list",
        Duration::from_secs(30),
        || agent_listed(&td, &agent_id).then_some(()),
    );
    let shown = td
        .server_cli(&["agent", "show", "-spiffeID", &agent_id])
        .ok();
    for s in expected_selectors(&fps) {
        assert!(
            shown.stdout.contains(&s),
            "{kt}: {s} missing: {}",
            shown.stdout
        );
    }

    let id = "spiffe://example.org/workload/under-spire-agent";
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
    agent.wait_for_x509_svid(id);
}

/// sigil-agent with an x509pop node certificate with a `kt` key attests to
/// a real spire-server and serves a workload.
fn sigil_agent_attests_to_spire_server(kt: KeyType, intermediate: bool) {
    let Some(spire) = spire::bin_dir() else {
        return;
    };
    let pki = pki_dir();
    let (root, leaf, fps) = interop_pki(pki.path(), kt, intermediate);
    let mut td = TrustDomain::with(Options {
        agent_node_attestor: agent_block(pki.path(), "node"),
        ..Options::default()
    });
    let server = SpireServer::start(&mut td, &spire, &server_block(pki.path(), &root));
    server.serve_sigil_agent(&mut td, 0);
    td.start_agent(0, None);

    let agent_id = x509pop_agent_id(&leaf);
    wait_for(
        "the sigil-agent in agent list",
        Duration::from_secs(30),
        || {
            let out = server.cli(&["agent", "list"]);
            (out.code == 0 && out.stdout.contains(&agent_id)).then_some(())
        },
    );
    let shown = server.cli(&["agent", "show", "-spiffeID", &agent_id]).ok();
    for s in expected_selectors(&fps) {
        assert!(
            shown.stdout.contains(&s),
            "{kt}: {s} missing: {}",
            shown.stdout
        );
    }

    let id = "spiffe://example.org/workload/under-sigil-agent";
    server
        .cli(&[
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
    wait_for(
        "X509-SVID from sigil-agent",
        Duration::from_secs(60),
        || {
            let out = td.agent_cli(0, &["api", "fetch", "x509"]);
            (out.code == 0 && out.stdout.contains(id)).then_some(())
        },
    );
}

#[test]
fn a_real_spire_agent_attests_to_sigil_server_with_ec_p256() {
    spire_agent_attests_to_sigil_server(KeyType::EcP256, false);
}

#[test]
fn a_real_spire_agent_attests_to_sigil_server_with_ec_p384_and_an_intermediate() {
    spire_agent_attests_to_sigil_server(KeyType::EcP384, true);
}

#[test]
fn a_real_spire_agent_attests_to_sigil_server_with_rsa_2048() {
    spire_agent_attests_to_sigil_server(KeyType::Rsa2048, false);
}

#[test]
fn sigil_agent_attests_to_a_real_spire_server_with_ec_p256_and_an_intermediate() {
    sigil_agent_attests_to_spire_server(KeyType::EcP256, true);
}

#[test]
fn sigil_agent_attests_to_a_real_spire_server_with_ec_p384() {
    sigil_agent_attests_to_spire_server(KeyType::EcP384, false);
}

#[test]
fn sigil_agent_attests_to_a_real_spire_server_with_rsa_2048() {
    sigil_agent_attests_to_spire_server(KeyType::Rsa2048, false);
}
