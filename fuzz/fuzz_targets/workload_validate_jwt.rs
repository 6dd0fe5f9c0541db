//! Workload API `ValidateJWTSVID`: the audience and token come from any
//! local process. The first line of the input is the audience, the rest the
//! token; validation against a fixed bundle (with a real P-256 key) never
//! panics, and a token that validates is for the bundle's trust domain and
//! names the audience.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_spiffe::svid::jwt::JwtSvid;
use sigil_spiffe::{Bundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (audience, token) = text.split_once('\n').unwrap_or(("spire", text));
    let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
    let bundle = Bundle::parse_jwks(&td, include_bytes!("../seeds/jwt-bundle.json"))
        .expect("seed bundle parses");
    let audience = [audience.to_string()];
    if let Ok(svid) = JwtSvid::validate(
        token,
        &bundle,
        &audience,
        1_700_000_000,
        &sigil_crypto::AwsLcJwtVerifier,
    ) {
        assert!(svid.spiffe_id().is_member_of(&td));
        assert!(svid.audience().iter().any(|a| a == &audience[0]));
    }
});
