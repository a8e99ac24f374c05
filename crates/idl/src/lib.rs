//! flyteidl2, as Flyte defines it: the message types (binary protobuf and the proto3 JSON
//! mapping, both strict to the schema) and the Connect service traits and clients of the services
//! flyte-run serves and calls, generated at build time by connectrpc-build from the descriptors
//! of the pinned `PyPI` `flyteidl2` release (`descriptors/`, written by `cargo xtask codegen`).
//!
//! Nothing here is written by hand, so nothing here can add a field Flyte does not define.

#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::pedantic,
    clippy::all,
    rust_2018_idioms,
    missing_docs
)]
mod generated {
    connectrpc::include_generated!();
    // flyte-run's own services (`proto/flyterun/`), the ones only the embedded sandbox serves.
    // Flyte defines neither, so they sit in a package of their own (`flyterun`) and never touch
    // a Flyte message.
    connectrpc::include_generated!("_flyterun.rs");
}

pub use generated::*;

/// The descriptor set the code was generated from (flyteidl2 files and their imports).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!("../descriptors/flyteidl2.binpb");
