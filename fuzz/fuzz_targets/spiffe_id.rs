//! SPIFFE ID and trust domain parsing: never panics, and whatever parses
//! prints back to a string that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        sigil_spiffe::fuzzing::check_id_round_trip(s);
    }
});
