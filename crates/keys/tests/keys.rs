//! flyte-keys against the real OpenSSH tools: ssh-keygen reads what we write, ssh logs in with it,
//! and every bad input is refused without touching the user's files.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use flyte_keys::{HostKey, KeyError, ensure_keypair, known_hosts_line};
use flyte_testkit::{ReadOnlyDir, Sshd, TempHome, ssh_keygen};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn creates_once_then_reuses() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    let first = ensure_keypair(&dir).unwrap();
    let key = dir.join("id_ed25519");
    assert_eq!(first.private_key_path, key);
    assert!(
        first.public_key.starts_with("ssh-ed25519 AAAA"),
        "{}",
        first.public_key
    );
    assert!(
        first.public_key.ends_with(" flyte-ssh-debug"),
        "{}",
        first.public_key
    );
    assert!(
        first.fingerprint.starts_with("SHA256:"),
        "{}",
        first.fingerprint
    );
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        fs::read_to_string(key.with_extension("pub")).unwrap(),
        format!("{}\n", first.public_key)
    );

    let bytes = fs::read(&key).unwrap();
    let second = ensure_keypair(&dir).unwrap();
    assert_eq!(second, first);
    assert_eq!(fs::read(&key).unwrap(), bytes, "the key was rewritten");
    // Only the pair: no temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["id_ed25519", "id_ed25519.pub"]);
}

#[test]
fn openssh_reads_what_we_write() {
    let home = TempHome::new();
    let pair = ensure_keypair(&home.ssh_debug_dir()).unwrap();
    let derived = run(Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&pair.private_key_path));
    // ssh-keygen -y prints the key and its comment.
    assert_eq!(derived.trim(), pair.public_key);
    let listed = run(Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&pair.private_key_path));
    assert_eq!(
        listed.split_whitespace().nth(1),
        Some(pair.fingerprint.as_str()),
        "{listed}"
    );
}

#[test]
fn ssh_logs_in_with_the_key() {
    let home = TempHome::new();
    let pair = ensure_keypair(&home.ssh_debug_dir()).unwrap();
    let sshd = Sshd::builder().authorize(&pair.public_key).start();
    let out = run(sshd
        .ssh_with_identity(&pair.private_key_path)
        .arg("echo logged-in"));
    assert_eq!(out, "logged-in\n", "sshd log:\n{}", sshd.log_text());
}

#[test]
fn a_key_readable_by_others_is_refused_and_kept() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    ensure_keypair(&dir).unwrap();
    let key = dir.join("id_ed25519");
    let bytes = fs::read(&key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = ensure_keypair(&dir).unwrap_err();
    assert!(
        matches!(err, KeyError::PermissionsTooOpen { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(fs::read(&key).unwrap(), bytes);
    assert_eq!(mode(&key), 0o644, "we must not change the user's file");
}

/// Put `contents` at `<dir>/id_ed25519` with mode 0600, run `ensure_keypair`, and check the file
/// is still exactly what it was.
fn refused(contents: &[u8]) -> KeyError {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_ed25519");
    fs::write(&key, contents).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = ensure_keypair(&dir).unwrap_err();
    assert_eq!(
        fs::read(&key).unwrap(),
        contents,
        "the key file was changed"
    );
    assert!(
        !key.with_extension("pub").exists(),
        "a .pub was written for an unusable key"
    );
    err
}

#[test]
fn unusable_private_keys_are_refused_and_kept() {
    let err = refused(b"not a key at all\n");
    assert!(matches!(err, KeyError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("left untouched"), "{err}");

    let err = refused(b"");
    assert!(matches!(err, KeyError::Corrupt { .. }), "{err:?}");

    let scratch = tempfile::tempdir().unwrap();
    let ecdsa = scratch.path().join("ecdsa");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&ecdsa));
    let err = refused(&fs::read(&ecdsa).unwrap());
    assert!(matches!(err, KeyError::WrongAlgorithm { .. }), "{err:?}");
    assert!(err.to_string().contains("ecdsa"), "{err}");

    let locked = scratch.path().join("locked");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "correct horse", "-f"])
        .arg(&locked));
    let err = refused(&fs::read(&locked).unwrap());
    assert!(matches!(err, KeyError::NeedsPassphrase { .. }), "{err:?}");
    assert!(err.to_string().contains("ssh-keygen -p"), "{err}");
}

#[test]
fn a_missing_or_stale_public_key_is_rewritten() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    let pair = ensure_keypair(&dir).unwrap();
    let public = dir.join("id_ed25519.pub");

    fs::remove_file(&public).unwrap();
    assert_eq!(ensure_keypair(&dir).unwrap(), pair);
    assert_eq!(fs::read_to_string(&public).unwrap().trim(), pair.public_key);

    let other = dir.join("other");
    ssh_keygen(&other, "someone-else");
    fs::copy(other.with_extension("pub"), &public).unwrap();
    assert_eq!(ensure_keypair(&dir).unwrap(), pair);
    assert_eq!(fs::read_to_string(&public).unwrap().trim(), pair.public_key);

    fs::write(&public, "garbage").unwrap();
    assert_eq!(ensure_keypair(&dir).unwrap(), pair);
    assert_eq!(fs::read_to_string(&public).unwrap().trim(), pair.public_key);
}

#[test]
fn an_existing_user_key_keeps_its_comment() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    fs::create_dir_all(&dir).unwrap();
    ssh_keygen(&dir.join("id_ed25519"), "alice@laptop");
    let pair = ensure_keypair(&dir).unwrap();
    assert!(
        pair.public_key.ends_with(" alice@laptop"),
        "{}",
        pair.public_key
    );
}

#[test]
fn odd_key_paths_are_clear_errors() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    fs::create_dir_all(dir.join("id_ed25519")).unwrap();
    let err = ensure_keypair(&dir).unwrap_err();
    assert!(matches!(err, KeyError::IsDirectory { .. }), "{err:?}");

    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(home.path().join("gone"), dir.join("id_ed25519")).unwrap();
    let err = ensure_keypair(&dir).unwrap_err();
    assert!(matches!(err, KeyError::DanglingSymlink { .. }), "{err:?}");
    assert!(
        !home.path().join("gone").exists(),
        "we wrote through a dangling link"
    );

    let home = TempHome::new();
    fs::write(home.path().join("file"), b"").unwrap();
    let err = ensure_keypair(&home.path().join("file")).unwrap_err();
    assert!(matches!(err, KeyError::NotWritable { .. }), "{err:?}");
}

#[test]
fn a_read_only_directory_is_a_clear_error() {
    let home = TempHome::new();
    let dir = home.ssh_debug_dir();
    fs::create_dir_all(&dir).unwrap();
    let _guard = ReadOnlyDir::new(&dir);
    let err = ensure_keypair(&dir).unwrap_err();
    assert!(matches!(err, KeyError::NotWritable { .. }), "{err:?}");
    assert!(err.to_string().contains("not writable"), "{err}");
}

#[test]
fn host_keys_are_generated_once_and_pinnable() {
    let home = TempHome::new();
    let path = home.path().join("host_key");
    let key = HostKey::load_or_generate(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    let again = HostKey::load_or_generate(&path).unwrap();
    assert_eq!(key.fingerprint(), again.fingerprint());
    // The published line's fingerprint is the key's, and ssh-keygen agrees.
    let line = key.public_key_line().unwrap();
    assert_eq!(
        flyte_keys::public_key_fingerprint(&line).unwrap(),
        key.fingerprint()
    );
    let pub_file = home.path().join("host_key.pub");
    fs::write(&pub_file, &line).unwrap();
    let keygen = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&keygen.stdout).contains(&key.fingerprint()));
    assert!(flyte_keys::public_key_fingerprint("ssh-ed25519 not-base64").is_err());

    // Debug output shows the fingerprint and nothing of the private key.
    let debug = format!("{key:?}");
    assert!(debug.contains(&key.fingerprint()), "{debug}");
    let pem = fs::read_to_string(&path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!debug.contains(&body[..20]), "{debug}");

    // A real sshd serving this host key is accepted by a client that pins it...
    let sshd = Sshd::builder().host_key(&path).start();
    let line = known_hosts_line(sshd.alias(), &key.public_key_line().unwrap()).unwrap();
    fs::write(sshd.known_hosts(), format!("{line}\n")).unwrap();
    assert_eq!(run(sshd.ssh().arg("echo pinned")), "pinned\n");

    // ...and refused by one that pins another key.
    let other = HostKey::load_or_generate(&home.path().join("other_key")).unwrap();
    let wrong = known_hosts_line(sshd.alias(), &other.public_key_line().unwrap()).unwrap();
    fs::write(sshd.known_hosts(), format!("{wrong}\n")).unwrap();
    let out = sshd.ssh().arg("echo should-not-run").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"));
}

#[test]
fn known_hosts_lines_reject_bad_aliases() {
    let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh2c3d5b3VsZGxpa2V0b2tub3d3aGF0dGhpc2lzZm9y x";
    assert!(
        known_hosts_line("flyte-debug", line)
            .unwrap()
            .starts_with("flyte-debug ssh-ed25519 AAAA")
    );
    assert!(
        !known_hosts_line("flyte-debug", line)
            .unwrap()
            .ends_with(" x"),
        "comment kept"
    );
    for bad in ["", "two words", "a,b", "wild*", "q?", "!neg", "#c", "[h]"] {
        let err = known_hosts_line(bad, line).unwrap_err();
        assert!(
            matches!(err, KeyError::InvalidAlias { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert!(known_hosts_line("ok", "not a key").is_err());
}
