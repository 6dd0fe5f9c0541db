//! JWT-SVIDs arrive from workloads (ValidateJWTSVID): parsing must never
//! panic, and a token that parses keeps a valid SPIFFE ID subject.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(svid) = sigil_spiffe::svid::jwt::JwtSvid::parse_insecure(s)
    {
        assert!(sigil_spiffe::SpiffeId::parse(svid.spiffe_id().as_str()).is_ok());
    }
});
