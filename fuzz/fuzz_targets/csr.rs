//! CSRs arrive from agents and admins over the network: parsing and
//! signature verification must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sigil_crypto::csr::parse_and_verify_csr(data);
});
