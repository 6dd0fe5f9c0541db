//! SPIFFE bundle (JWKS) parsing: never panics on any bytes, and a bundle
//! that parses survives `to_jwks` and a second parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sigil_spiffe::fuzzing::check_bundle_jwks(data);
});
