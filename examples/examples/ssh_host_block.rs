//! Render the ssh Host block for a debug route, using only `flyte-ssh-config`.
//!
//!     cargo run -p flyte-examples --example ssh_host_block -- ALIAS wss://ROUTE
#![allow(clippy::print_stdout)]

use flyte_ssh_config::{DebugHost, HostKeyCheck};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [alias, url] = args.as_slice() else {
        return Err("usage: ssh_host_block ALIAS wss://ROUTE".into());
    };
    let debug_dir = std::path::PathBuf::from("~/.flyte/ssh-debug");
    let block = DebugHost {
        alias: alias.clone(),
        user: "root".to_owned(),
        identity_file: debug_dir.join("id_ed25519"),
        proxy_program: "flyte-run".into(),
        wss_url: url.clone(),
        tunnel_args: Vec::new(),
        headers_file: debug_dir.join(format!("{alias}.headers")),
        host_key_alias: format!("flyte-debug-{alias}"),
        known_hosts_file: debug_dir.join("known_hosts"),
        host_key_check: HostKeyCheck::LearnOnFirstUse,
    };
    print!("{}", block.render()?);
    Ok(())
}
