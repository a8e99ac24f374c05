//! The test harness itself: a real sshd, reached by the real ssh client, stopped by pid.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use flyte_testkit::{Sshd, TempHome, current_user};

#[test]
fn system_ssh_runs_echo_on_the_harness_sshd() {
    let sshd = Sshd::start();
    let out = sshd
        .ssh()
        .args(["echo", "hello from sshd"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from sshd\n");
    // The session ran as us, on the port the harness reserved.
    let who = sshd.ssh().args(["id", "-un"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), current_user());
    assert!(
        sshd.log_text().contains(&format!("port {}", sshd.port())),
        "{}",
        sshd.log_text()
    );
}

#[test]
fn the_client_config_pins_the_host_key() {
    let sshd = Sshd::start();
    let other = Sshd::start();
    // Point the pinned known_hosts of one server at the other server's key: login must fail.
    std::fs::write(
        sshd.known_hosts(),
        format!("{} {}\n", sshd.alias(), other.host_public_key()),
    )
    .unwrap();
    let out = sshd.ssh().arg("true").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"));
}

#[test]
fn parallel_servers_get_distinct_ports() {
    let servers: Vec<_> = (0..4).map(|_| Sshd::start()).collect();
    let mut ports: Vec<_> = servers.iter().map(Sshd::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for s in &servers {
        assert!(
            s.ssh().arg("true").status().unwrap().success(),
            "{}",
            s.log_text()
        );
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn sshd_is_stopped_when_the_test_ends_or_panics() {
    let sshd = Sshd::start();
    let pid = sshd.pid();
    assert!(alive(pid));
    drop(sshd);
    assert!(!alive(pid), "sshd {pid} outlived its guard");

    let pid = std::panic::catch_unwind(|| {
        let sshd = Sshd::start();
        std::panic::panic_any(sshd.pid());
    })
    .unwrap_err()
    .downcast::<u32>()
    .map(|pid| *pid)
    .unwrap();
    assert!(!alive(pid), "sshd {pid} outlived a panicking test");
}

#[test]
fn temp_home_is_isolated_from_the_real_home() {
    let home = TempHome::new();
    let out = home
        .command("sh")
        .args(["-c", "echo $HOME"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        home.path().display().to_string()
    );
    assert_ne!(
        Some(home.path().as_os_str()),
        std::env::var_os("HOME").as_deref()
    );
    let path = home.path().to_owned();
    drop(home);
    assert!(!path.exists(), "the temporary home was not removed");
}
