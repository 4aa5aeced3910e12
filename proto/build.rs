//! Compiles `proto/isame/v1/*.proto` with protox (pure Rust), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/isame/v1/discovery.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The crate does no I/O; the binaries bring tonic's transport.
        .build_transport(false)
        // Carries a private key: its Debug is written by hand, redacted.
        .skip_debug(["isame.v1.StoredCertificate"])
        // A version's config, shared by reference between the streams
        // that send it instead of copied per node.
        .bytes(".isame.v1.Snapshot.config_json")
        .compile_fds(fds)?;
    Ok(())
}
