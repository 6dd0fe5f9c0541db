//! Properties shared by the fuzz targets in `fuzz/` and the unit tests, so CI
//! checks the same invariants the fuzzer explores. Each function panics when its
//! property does not hold; none of them is meant for production callers.

use crate::{Bundle, SpiffeId, TrustDomain};

/// Whatever `s` is, parsing it as a SPIFFE ID and as a trust domain never
/// panics, and every value that parses prints back to a string that parses to
/// the same value.
pub fn check_id_round_trip(s: &str) {
    if let Ok(id) = SpiffeId::parse(s) {
        let printed = id.to_string();
        assert_eq!(printed, s, "a SPIFFE ID prints exactly as it was written");
        let again = SpiffeId::parse(&printed).expect("a printed SPIFFE ID parses");
        assert_eq!(again, id);
        let td = id.trust_domain();
        assert!(id.is_member_of(&td));
        let rebuilt = td
            .id_with_path(id.path())
            .expect("trust domain plus path of a valid ID is a valid ID");
        assert_eq!(rebuilt, id);
    }
    if let Ok(td) = TrustDomain::new(s) {
        let again = TrustDomain::new(&td.to_string()).expect("a printed trust domain parses");
        assert_eq!(again, td);
        let id = SpiffeId::parse(&td.id_string()).expect("a trust domain's own ID parses");
        assert_eq!(id.trust_domain(), td);
        assert!(id.is_trust_domain_id());
    }
}

/// Parsing arbitrary bytes as a SPIFFE bundle never panics, and a bundle that
/// parses serialises to a document that parses back to the same bundle.
pub fn check_bundle_jwks(data: &[u8]) {
    let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
    if let Ok(bundle) = Bundle::parse_jwks(&td, data) {
        let doc = bundle.to_jwks();
        let again = Bundle::parse_jwks(&td, &doc).expect("our own JWKS output parses");
        assert_eq!(again, bundle);
    }
}

/// A deterministic spread of strings near the edges of the SPIFFE ID grammar:
/// fragments of valid and invalid IDs glued together by a small PRNG.
#[cfg(test)]
pub(crate) fn generated_id_strings(count: usize) -> Vec<String> {
    const FRAGMENTS: &[&str] = &[
        "spiffe://",
        "SPIFFE://",
        "spiffe:/",
        "example.org",
        "td",
        "a",
        "Z",
        "0",
        "/",
        "//",
        ".",
        "..",
        "-",
        "_",
        "%41",
        "%",
        ":",
        "8080",
        "@",
        "?",
        "#",
        "é",
        " ",
        "1.2.3.4",
        "[::1]",
    ];
    // xorshift64*: no dependency, and the same sequence on every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = String::new();
        if next() % 4 != 0 {
            s.push_str("spiffe://");
        }
        let parts = 1 + next() % 8;
        for _ in 0..parts {
            let pick = usize::try_from(next() % FRAGMENTS.len() as u64).unwrap_or(0);
            s.push_str(FRAGMENTS[pick]);
        }
        if next() % 50 == 0 {
            s.push_str(&"x".repeat(2100 - s.len().min(2100)));
        }
        out.push(s);
    }
    out
}
