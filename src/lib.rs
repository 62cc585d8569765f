//! postsub: the contract of the post-submission proxy and the tower layer form backends use.
//!
//! # Layout
//! - [`pb`]: the gRPC contract (`postsub.v1`), generated from `proto/` by `build.rs`:
//!   messages, the `PostSubmission`/`TaskAdmin` clients and servers.
//! - [`json`]: conversions between `serde_json` values and protobuf's `Struct`/`Value`, the
//!   shape answers and task outputs travel in.
//! - [`layer`]: [`PostSubmissionLayer`], which calls `Process` after every successful submit
//!   and merges the reply into the response body under `post_submission`; [`retry`]: its
//!   background retries of a `Process` call that failed.
//! - [`secret`]: [`Secret`], a token or password kept out of `Debug` output.
//! - [`tls`]: [`ClientTls`], how the layer and the CLI check the proxy over `https://` and
//!   show a client certificate.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod json;
pub mod layer;
pub mod retry;
pub mod secret;
pub mod tls;

pub use layer::{PostSubmission, PostSubmissionLayer, ResponseFuture};
pub use retry::{RetryPolicy, RetryStats};
pub use secret::Secret;
pub use tls::{ClientTls, TlsError};

/// Generated code of the `postsub.v1` protobuf package.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("postsub.v1");

    /// Encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("postsub_descriptor");
}
