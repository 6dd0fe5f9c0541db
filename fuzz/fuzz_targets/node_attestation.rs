//! AttestAgent request handling: the attestation payloads and challenge
//! responses an agent sends to the server's node attestors (join_token,
//! x509pop, k8s_psat). The first byte picks the parser; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_plugin::nodeattestor::{k8s_psat, x509pop};
use sigil_spiffe::TrustDomain;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
    match which % 4 {
        0 => {
            // join_token: the payload is the token text.
            if let Ok(token) = std::str::from_utf8(rest) {
                let _ = sigil_server::plugin::nodeattestor::join_token::agent_id(&td, token);
            }
        }
        1 => {
            if let Ok(p) = k8s_psat::Payload::parse(rest) {
                let _ = k8s_psat::agent_id(&td, &p.cluster, "node-uid");
            }
        }
        2 => {
            // x509pop: the certificate chain, then the challenge for its leaf.
            let Ok(att) = serde_json::from_slice::<x509pop::AttestationData>(rest) else {
                return;
            };
            let Some(leaf) = att.certificates.first() else { return };
            if let Ok(leaf) = x509pop::NodeCert::parse(leaf, "leaf") {
                let _ = x509pop::san_selectors(&leaf, &td);
                let _ = x509pop::generate_challenge(&leaf);
            }
        }
        _ => {
            // x509pop: a challenge response against a fixed leaf's challenge.
            let Ok(response) = serde_json::from_slice::<x509pop::Response>(rest) else {
                return;
            };
            let leaf_der = include_bytes!("../seeds/x509pop-leaf.der");
            let leaf = x509pop::NodeCert::parse(leaf_der, "leaf").expect("seed leaf parses");
            let challenge = x509pop::generate_challenge(&leaf).expect("seed leaf has a key");
            let _ = x509pop::verify_response(&leaf, &challenge, &response);
        }
    }
});
