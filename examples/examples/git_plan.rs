//! Print the git commands (and the ssh command git would use) that clone URL at REVISION with an
//! SSH git connection, using only `flyte-connections`. Nothing is run.
//!
//!     cargo run -p flyte-examples --example git_plan -- URL DEST [REVISION] [FLAG...]
#![allow(clippy::print_stdout)]

use std::path::Path;

use flyte_connections::{GitInit, HostKeyPolicy, git_ssh_command, plan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dest, rest @ ..] = args.as_slice() else {
        return Err("usage: git_plan URL DEST [REVISION] [FLAG...]".into());
    };
    let init = GitInit {
        url: None,
        revision: rest.first().cloned(),
        flags: rest.iter().skip(1).cloned().collect(),
    };
    let policy = HostKeyPolicy::Pinned {
        known_hosts: "/etc/.ssh/known_hosts".into(),
    };
    println!(
        "GIT_SSH_COMMAND={}",
        git_ssh_command(Path::new("/etc/.ssh/id_rsa"), &policy)?
    );
    for step in plan(url, Path::new(dest), &init)? {
        println!("{step}");
    }
    Ok(())
}
