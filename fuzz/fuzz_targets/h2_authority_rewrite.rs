//! The agent's HTTP/2 `:authority` rewriter sees raw bytes from any local
//! process that connects to the Workload API socket. Whatever the input and
//! however it is split across reads, it must never panic, and a rejected
//! stream stays rejected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::uds::authority::AuthorityRewriter;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a read size so split frames are exercised.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut rw = AuthorityRewriter::new();
    let mut out = Vec::new();
    for piece in rest.chunks(chunk) {
        if rw.feed(piece, &mut out).is_err() {
            return;
        }
    }
    rw.finish(&mut out);
});
