//! Real process groups (`sh` and `sleep`), ended by the registry and by the watchdog.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use flyte_reaper::Groups;

/// A shell in a group of its own that starts a background `sleep` and waits: ending the group
/// must end both. Returns the leader.
fn group_with_a_background_child() -> Child {
    Command::new("sh")
        .args(["-c", "sleep 600 & wait"])
        .process_group(0)
        .spawn()
        .unwrap()
}

fn group_is_empty(pgid: u32) -> bool {
    !flyte_reaper::group_is_alive(pgid)
}

#[test]
fn terminate_all_ends_every_group_of_the_set_and_its_children() {
    let root = Groups::new();
    let sessions = root.child();
    let mut task = group_with_a_background_child();
    let mut session = group_with_a_background_child();
    let _task_member = root.adopt(task.id());
    let session_member = sessions.adopt(session.id());
    assert_eq!(root.pgids().len(), 2);
    assert_eq!(sessions.pgids(), vec![session.id()]);

    assert_eq!(root.terminate_all(Duration::from_secs(3)), 2);
    task.wait().unwrap();
    session.wait().unwrap();
    assert!(group_is_empty(task.id()) && group_is_empty(session.id()));

    drop(session_member);
    assert!(sessions.pgids().is_empty());
    assert_eq!(root.pgids(), vec![task.id()]);
}

#[test]
fn ending_a_child_set_leaves_the_parents_other_groups_alone() {
    let root = Groups::new();
    let sessions = root.child();
    let mut task = group_with_a_background_child();
    let mut session = group_with_a_background_child();
    let _t = root.adopt(task.id());
    let _s = sessions.adopt(session.id());
    sessions.terminate_all(Duration::from_secs(3));
    session.wait().unwrap();
    assert!(task.try_wait().unwrap().is_none(), "the task was ended too");
    root.terminate_all(Duration::from_secs(3));
    task.wait().unwrap();
}

/// The owner's part of the watchdog test, run in a process of its own (this test binary again,
/// with `REAPER_OWNER` set): register a group, say its id, then wait for `SIGKILL`.
// The owner never waits for its task: it is killed first, and the watchdog ends the task.
#[allow(clippy::zombie_processes, clippy::print_stdout)]
fn be_the_owner() -> ! {
    let root = Groups::with_watchdog().unwrap();
    let task = group_with_a_background_child();
    let _member = root.adopt(task.id());
    println!("group {}", task.id());
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn the_watchdog_ends_the_groups_when_its_owner_is_sigkilled() {
    use std::io::BufRead;
    if std::env::var_os("REAPER_OWNER").is_some() {
        be_the_owner();
    }
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_watchdog_ends_the_groups_when_its_owner_is_sigkilled",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REAPER_OWNER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(owner.stdout.take().unwrap()).lines();
    let pgid: u32 = lines
        .by_ref()
        .map_while(Result::ok)
        // libtest may print "test NAME ... " on the same line first.
        .find_map(|line| {
            line.split_once("group ")
                .map(|(_, g)| g.trim().parse().unwrap())
        })
        .expect("the owner names its group");
    assert!(!group_is_empty(pgid));
    owner.kill().unwrap();
    owner.wait().unwrap();
    // The watchdog sends SIGTERM at once and SIGKILL after 3 s; bounded wait for the group to go.
    for _ in 0..400 {
        if group_is_empty(pgid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the group outlived its SIGKILLed owner");
}
