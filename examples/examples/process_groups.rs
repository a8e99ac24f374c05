//! End a process and everything it started, using only `flyte-reaper`:
//!
//!     cargo run -p flyte-examples --example process_groups
#![allow(clippy::print_stdout)]
// The example starts the process tree it then ends.
#![allow(clippy::disallowed_methods)]

use std::os::unix::process::CommandExt;
use std::time::Duration;

use flyte_reaper::{Groups, group_is_alive};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A watchdog ends the groups even if this process is killed before it ends them itself.
    let groups = Groups::with_watchdog()?;
    // A shell that leaves a grandchild behind: killing the shell alone would orphan it.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 600 & wait"])
        .process_group(0)
        .spawn()?;
    let member = groups.adopt(child.id());
    println!("started process group {}", member.pgid());
    let ended = groups.terminate_all(Duration::from_secs(2));
    child.wait()?;
    println!(
        "ended {ended} group(s); group {} still alive: {}",
        member.pgid(),
        group_is_alive(member.pgid())
    );
    Ok(())
}
