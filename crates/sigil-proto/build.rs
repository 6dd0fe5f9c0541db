//! Compiles `proto/` into Rust with protox (pure Rust, so no system `protoc`)
//! and tonic-prost-build, and writes the encoded descriptor set that
//! `FILE_DESCRIPTOR_SET` embeds for gRPC reflection.

use std::path::PathBuf;

/// Every file with a service, relative to `proto/`. Type-only files are pulled
/// in through their imports.
const PROTOS: &[&str] = &[
    "workload.proto",
    "spire/api/server/agent/v1/agent.proto",
    "spire/api/server/bundle/v1/bundle.proto",
    "spire/api/server/entry/v1/entry.proto",
    "spire/api/server/svid/v1/svid.proto",
    "spire/api/server/trustdomain/v1/trustdomain.proto",
    "spire/api/server/localauthority/v1/localauthority.proto",
    "spire/api/server/debug/v1/debug.proto",
    "spire/api/server/logger/v1/logger.proto",
    "spire/api/agent/debug/v1/debug.proto",
    "spire/api/agent/delegatedidentity/v1/delegatedidentity.proto",
    "spire/api/agent/logger/v1/logger.proto",
    "sigil/api/server/sync/v1/sync.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    for file in PROTOS {
        compiler.open_file(file)?;
    }
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
