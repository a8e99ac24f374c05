//! Flyte's messages in both of their encodings, using only `flyte-idl` (with buffa's `Message`
//! trait and `serde_json`, which every user of the generated types has):
//!
//!     cargo run -p flyte-examples --example idl_messages -- my-project development my-run
#![allow(clippy::print_stdout)]

use buffa::Message;
use flyte_idl::flyteidl2::common::RunIdentifier;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [project, domain, name] = args.as_slice() else {
        return Err("usage: idl_messages PROJECT DOMAIN RUN_NAME".into());
    };
    let run = RunIdentifier {
        project: project.clone(),
        domain: domain.clone(),
        name: name.clone(),
        ..RunIdentifier::default()
    };
    // Proto3's JSON mapping, as Flyte's Connect endpoints accept it.
    let json = serde_json::to_string(&run)?;
    println!("JSON: {json}");
    // Binary protobuf, what the Connect clients send by default.
    let binary = run.encode_to_vec();
    println!("binary protobuf: {} bytes", binary.len());
    assert_eq!(RunIdentifier::decode_from_slice(&binary)?, run);
    assert_eq!(serde_json::from_str::<RunIdentifier>(&json)?, run);
    println!("both decode to the same identifier");
    Ok(())
}
