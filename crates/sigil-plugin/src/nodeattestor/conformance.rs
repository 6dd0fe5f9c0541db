//! The conformance suite every NodeAttestor pair runs (SPIRE's
//! `keymanagertest` pattern): an honest agent attests, evidence from
//! elsewhere and garbage are refused with typed errors, a tampered
//! challenge response is refused, and re-attestation behaves as the
//! result promised.
//!
//! A plugin's tests build a [`Pair`] from its own fixtures and call
//! [`run_all`]; failures panic with the case name.

use std::sync::Arc;

use async_trait::async_trait;
use sigil_spiffe::TrustDomain;

use super::{
    AgentNodeAttestor, AttestResult, Challenges, DirectChallenges, NodeAttestorError,
    ServerNodeAttestor, agent_path_prefix,
};

/// A server half with agent halves to try against it.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The trust domain the server half was built for.
    pub trust_domain: TrustDomain,
    /// The server half.
    pub server: Arc<dyn ServerNodeAttestor>,
    /// An agent half whose evidence the server must accept.
    pub agent: Arc<dyn AgentNodeAttestor>,
    /// Agent halves whose evidence the server must refuse (another CA,
    /// another cluster, an unknown token).
    pub refused: Vec<Arc<dyn AgentNodeAttestor>>,
}

/// Runs every case, in an order that spends single-use evidence last.
pub async fn run_all(pair: &Pair) -> AttestResult {
    garbage_payloads_are_refused(pair).await;
    evidence_the_server_does_not_trust_is_refused(pair).await;
    let first = honest_agent_attests(pair).await;
    attesting_again_matches_can_reattest(pair, &first).await;
    tampered_challenge_responses_are_refused(pair, &first).await;
    first
}

async fn attest(
    server: &dyn ServerNodeAttestor,
    agent: &dyn AgentNodeAttestor,
) -> (Result<AttestResult, NodeAttestorError>, usize) {
    let payload = match agent.payload().await {
        Ok(p) => p,
        Err(e) => return (Err(e), 0),
    };
    let mut ch = DirectChallenges::new(agent);
    let r = server.attest(&payload, &mut ch).await;
    (r, ch.rounds)
}

async fn honest_agent_attests(pair: &Pair) -> AttestResult {
    assert_eq!(
        pair.server.name(),
        pair.agent.name(),
        "the halves of a pair must share the attestation type"
    );
    let (r, _) = attest(pair.server.as_ref(), pair.agent.as_ref()).await;
    let r = r.unwrap_or_else(|e| panic!("honest {} agent refused: {e}", pair.server.name()));
    assert!(
        r.agent_id.is_member_of(&pair.trust_domain),
        "{} is not in {}",
        r.agent_id,
        pair.trust_domain
    );
    let prefix = agent_path_prefix(pair.server.name());
    assert!(
        r.agent_id.path().starts_with(&prefix),
        "{} does not start with {prefix}",
        r.agent_id
    );
    for s in &r.selectors {
        assert_eq!(
            s.kind(),
            pair.server.name(),
            "selector {s} is not of the attestor's type"
        );
    }
    r
}

async fn attesting_again_matches_can_reattest(pair: &Pair, first: &AttestResult) {
    let (again, _) = attest(pair.server.as_ref(), pair.agent.as_ref()).await;
    if first.can_reattest {
        let again = again.unwrap_or_else(|e| {
            panic!(
                "{} promised re-attestation but refused the same agent: {e}",
                pair.server.name()
            )
        });
        assert_eq!(
            again.agent_id, first.agent_id,
            "re-attestation must give the same agent ID"
        );
    } else if first.join_token.is_some() {
        // Single-use evidence the server spends when it records the agent
        // (in the same transaction); the attestor alone cannot spend it.
        if let Ok(again) = again {
            assert_eq!(
                again.join_token, first.join_token,
                "the same evidence must name the same token to spend"
            );
        }
    } else {
        assert!(
            again.is_err(),
            "{} cannot re-attest, yet the same evidence was accepted twice",
            pair.server.name()
        );
    }
}

async fn evidence_the_server_does_not_trust_is_refused(pair: &Pair) {
    for agent in &pair.refused {
        let (r, _) = attest(pair.server.as_ref(), agent.as_ref()).await;
        match r {
            Ok(r) => panic!(
                "{} accepted evidence it must refuse (agent ID {})",
                pair.server.name(),
                r.agent_id
            ),
            Err(NodeAttestorError::Denied(_) | NodeAttestorError::Invalid(_)) => {}
            Err(e) => panic!("refusal must be Denied or Invalid, got {e:?}"),
        }
    }
}

async fn garbage_payloads_are_refused(pair: &Pair) {
    let honest = pair
        .agent
        .payload()
        .await
        .unwrap_or_else(|e| panic!("the honest agent has no payload: {e}"));
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 7],
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"{\"certificates\":\"x\",\"token\":5}".to_vec(),
    ];
    garbage.push(honest[..honest.len() / 2].to_vec());
    for payload in garbage {
        struct NoChallenges;
        #[async_trait]
        impl Challenges for NoChallenges {
            async fn challenge(&mut self, _: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError> {
                Ok(b"garbage".to_vec())
            }
        }
        let r = pair.server.attest(&payload, &mut NoChallenges).await;
        assert!(
            r.is_err(),
            "{} accepted the garbage payload {:?}",
            pair.server.name(),
            String::from_utf8_lossy(&payload)
        );
    }
}

async fn tampered_challenge_responses_are_refused(pair: &Pair, first: &AttestResult) {
    // Only meaningful for attestors that challenge and accept the same
    // evidence twice.
    if !first.can_reattest {
        return;
    }
    let payload = match pair.agent.payload().await {
        Ok(p) => p,
        Err(e) => panic!("the honest agent has no payload: {e}"),
    };
    struct Tamper<'a> {
        agent: &'a dyn AgentNodeAttestor,
        rounds: usize,
    }
    #[async_trait]
    impl Challenges for Tamper<'_> {
        async fn challenge(&mut self, c: Vec<u8>) -> Result<Vec<u8>, NodeAttestorError> {
            self.rounds += 1;
            let mut r = self.agent.respond(&c).await?;
            // Flip a character in the middle of the response, which for a
            // JSON document with a base64 signature lands in the signature.
            let mid = r.len() / 2;
            match (mid..r.len()).find(|&i| r[i].is_ascii_alphanumeric()) {
                Some(i) => r[i] = if r[i] == b'A' { b'B' } else { b'A' },
                None => r.push(b'x'),
            }
            Ok(r)
        }
    }
    let mut t = Tamper {
        agent: pair.agent.as_ref(),
        rounds: 0,
    };
    let r = pair.server.attest(&payload, &mut t).await;
    if t.rounds > 0 {
        assert!(
            r.is_err(),
            "{} accepted a tampered challenge response",
            pair.server.name()
        );
    }
}
