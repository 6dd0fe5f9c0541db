//! `agent.conf` parsing (what `sigil-agent run` and `validate` read):
//! arbitrary HCL text never panics the reader.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sigil_agent::config::AgentConfig::parse(text);
    }
});
