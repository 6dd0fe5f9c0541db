//! AttestAgent request handling: the payloads and challenge responses an
//! agent sends to the server's node attestors, fed to the real server halves
//! (join_token with an in-memory token store, x509pop trusting a fixed CA)
//! and to the k8s_psat payload parser (its TokenReview needs a
//! kube-apiserver). The first byte picks the attestor. For x509pop the next
//! two bytes are the payload's length, and the rest is the agent's answer to
//! every challenge; when the first byte's top bit is set the challenge is
//! answered with the seed node key instead, so a well-formed chain reaches
//! selectors and the agent path. None may panic, and an attestation that
//! succeeds names an agent of the server's trust domain.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use sigil_plugin::ManualClock;
use sigil_plugin::nodeattestor::{
    Challenges, JoinTokens, NodeAttestorError, ServerNodeAttestor, k8s_psat, x509pop,
};
use sigil_server::catalog::ServerContext;
use sigil_server::plugin::nodeattestor::{join_token, x509pop as server_x509pop};
use sigil_spiffe::TrustDomain;

/// One known token, "abc", valid until well after the clock's time.
#[derive(Debug)]
struct Tokens;

#[async_trait]
impl JoinTokens for Tokens {
    async fn expiry(&self, token: &str) -> Result<Option<i64>, NodeAttestorError> {
        Ok((token == "abc").then_some(2_000_000_000))
    }
}

struct Fixture {
    td: TrustDomain,
    join_token: Arc<dyn ServerNodeAttestor>,
    x509pop: Arc<dyn ServerNodeAttestor>,
    node: x509pop::Credentials,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, include_bytes!("../seeds/x509pop-ca.pem")).expect("write CA");
        let ctx = ServerContext {
            trust_domain: td.clone(),
            data_dir: dir.path().to_path_buf(),
            clock: Arc::new(ManualClock::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )),
            join_tokens: Arc::new(Tokens),
        };
        let join_token = join_token::build(&serde_json::json!({}), &ctx).expect("join_token");
        let x509pop = server_x509pop::build(
            &serde_json::json!({
                "ca_bundle_path": ca.to_string_lossy(),
                "agent_path_template": "/x509pop/{{ .Subject.CommonName }}/{{ .TrustDomain }}",
            }),
            &ctx,
        )
        .expect("x509pop");
        let node = x509pop::Credentials::from_pem(
            include_bytes!("../seeds/x509pop-node.pem"),
            include_bytes!("../seeds/x509pop-node.key"),
            None,
        )
        .expect("seed node credentials");
        Fixture {
            td,
            join_token,
            x509pop,
            node,
            _dir: dir,
        }
    })
}

/// Answers every challenge with the fuzzed bytes, or honestly with the seed
/// node key; at most a few rounds.
struct Answers<'a> {
    fuzzed: &'a [u8],
    honest: Option<&'a x509pop::Credentials>,
    rounds: usize,
}

#[async_trait]
impl Challenges for Answers<'_> {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError> {
        self.rounds += 1;
        if self.rounds > 4 {
            return Err(NodeAttestorError::Channel("too many challenges".into()));
        }
        match self.honest {
            Some(creds) => creds.respond(&challenge),
            None => Ok(self.fuzzed.to_vec()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let result = match which & 0x7f {
        0 => {
            let mut none = Answers {
                fuzzed: &[],
                honest: None,
                rounds: 0,
            };
            futures::executor::block_on(f.join_token.attest(rest, &mut none))
        }
        1 => {
            if let Ok(p) = k8s_psat::Payload::parse(rest) {
                let _ = k8s_psat::agent_id(&f.td, &p.cluster, "node-uid");
            }
            return;
        }
        _ => {
            let Some((len, rest)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
            let (payload, answer) = rest.split_at(len);
            let honest = (which & 0x80 != 0).then_some(&f.node);
            let mut answers = Answers {
                fuzzed: answer,
                honest,
                rounds: 0,
            };
            futures::executor::block_on(f.x509pop.attest(payload, &mut answers))
        }
    };
    if let Ok(r) = result {
        assert!(
            r.agent_id.is_member_of(&f.td),
            "agent ID outside the trust domain"
        );
    }
});
