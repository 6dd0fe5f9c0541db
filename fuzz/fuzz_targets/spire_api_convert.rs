//! SPIRE server API requests, proto to domain: a registration entry, its
//! selectors, a federation relationship (with its bundle), and bundle
//! authorities, each decoded from protobuf bytes as the gRPC layer would.
//! The first byte picks the message; no conversion may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sigil_proto::spire::api::types as pb;
use sigil_server::api::{bundle, convert, trustdomain};
use sigil_spiffe::TrustDomain;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let td = TrustDomain::new("example.org").expect("literal trust domain is valid");
    match which % 4 {
        0 => {
            if let Ok(e) = pb::Entry::decode(rest) {
                let _ = convert::entry_from_proto(&td, &e, None);
            }
        }
        1 => {
            if let Ok(e) = pb::Entry::decode(rest) {
                let _ = convert::selectors_from_proto(&e.selectors);
                let _ = convert::id_from_proto(e.spiffe_id.as_ref());
                let _ = convert::member_id_from_proto(&td, e.parent_id.as_ref());
            }
        }
        2 => {
            if let Ok(f) = pb::FederationRelationship::decode(rest) {
                let _ = trustdomain::relationship_from_proto(&f);
            }
        }
        _ => {
            if let Ok(b) = pb::Bundle::decode(rest) {
                let _ = bundle::x509_authorities_from_proto(&b.x509_authorities);
                let _ = bundle::jwt_authorities_from_proto(&b.jwt_authorities);
            }
        }
    }
});
