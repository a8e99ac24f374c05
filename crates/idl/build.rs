//! Generates the Rust types and Connect services from the committed descriptor sets
//! (`cargo xtask codegen` writes them: flyteidl2 from the pinned `PyPI` release, flyterun from
//! `proto/`). No protoc needed to build.

fn generate(set: &str, include_file: &str) {
    let list = format!("descriptors/{set}.files");
    let names = std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("{list} is committed ({e}); run `cargo xtask codegen`"));
    // Google's well-known types come from buffa-types, not from here.
    let files: Vec<&str> = names
        .lines()
        .filter(|name| !name.is_empty() && !name.starts_with("google/protobuf/"))
        .collect();
    println!("cargo:rerun-if-changed={list}");
    println!("cargo:rerun-if-changed=descriptors/{set}.binpb");
    connectrpc_build::Config::new()
        .descriptor_set(format!("descriptors/{set}.binpb"))
        .files(&files)
        .include_file(include_file)
        .compile()
        .unwrap_or_else(|e| panic!("generate the {set} code: {e}"));
}

fn main() {
    generate("flyteidl2", "_connectrpc.rs");
    generate("flyterun", "_flyterun.rs");
}
