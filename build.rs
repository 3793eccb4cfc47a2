//! Generates the gRPC code for containerd's snapshots API from the vendored proto files
//! (vendor/containerd-api), with `protox` so that no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "vendor/containerd-api";
    let proto = "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";
    println!("cargo:rerun-if-changed={root}");
    let fds = protox::compile([proto], [root])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
