//! X.509 bundles arrive as PEM (`bundle set -format pem`, upstream CA
//! files) and as DER certificates (SVIDs presented by peers): parsing never
//! panics, and a PEM bundle that parses prints back to PEM that parses to the
//! same bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_spiffe::{Bundle, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
    if let Ok(bundle) = Bundle::from_pem_certs(&td, data) {
        let pem = bundle.x509_authorities_pem();
        let again = Bundle::from_pem_certs(&td, pem.as_bytes()).expect("our own PEM parses");
        assert_eq!(again, bundle);
    }
    // The same bytes as one DER certificate, as a peer's SVID leaf.
    let _ = sigil_spiffe::svid::x509::validate_x509_svid_leaf(data);
    let _ = sigil_spiffe::svid::x509::validate_signing_cert(data);
    let _ = sigil_spiffe::svid::x509::spiffe_id_from_cert(data);
});
