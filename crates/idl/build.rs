//! Generates the flyteidl2 types and Connect services from the committed descriptor set
//! (`cargo xtask codegen` writes it from the pinned `PyPI` release). No protoc needed.

fn main() {
    let names = std::fs::read_to_string("descriptors/flyteidl2.files")
        .expect("descriptors/flyteidl2.files is committed; run `cargo xtask codegen`");
    // Google's well-known types come from buffa-types, not from here.
    let files: Vec<&str> = names
        .lines()
        .filter(|name| !name.is_empty() && !name.starts_with("google/protobuf/"))
        .collect();
    println!("cargo:rerun-if-changed=descriptors/flyteidl2.files");
    connectrpc_build::Config::new()
        .descriptor_set("descriptors/flyteidl2.binpb")
        .files(&files)
        .include_file("_connectrpc.rs")
        .compile()
        .expect("generate the flyteidl2 code");
}
