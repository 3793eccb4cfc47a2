//! The code `build.rs` generates from containerd's proto files (vendor/containerd-api):
//! messages, the `Snapshots` server trait and a client (the tests use it). The modules
//! mirror the proto packages, which the generated code refers to by relative path.
#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]

/// `containerd.*`.
pub mod containerd {
    /// `containerd.types`: the `Mount` message.
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    /// `containerd.services.*`.
    pub mod services {
        /// `containerd.services.snapshots`.
        pub mod snapshots {
            /// `containerd.services.snapshots.v1`: the `Snapshots` service.
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types;
