//! flyte-ssh-config against the real OpenSSH client: rendered blocks resolve as intended, a
//! connection through a rendered block works, and installs never damage a user's config.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use flyte_ssh_config::{
    Config, DebugHost, EditOptions, HostKeyCheck, Outcome, ShadowKind, SshConfigError, install,
    install_block, pin_host_key, remove, remove_block, shadowing,
};
use flyte_testkit::{ReadOnlyDir, Sshd, TempHome};
use proptest::prelude::*;

fn debug_host(alias: &str, root: &Path) -> DebugHost {
    DebugHost {
        alias: alias.to_owned(),
        user: "root".to_owned(),
        identity_file: root.join("keys dir/100%/id_ed25519"),
        proxy_program: root.join("bin/flyte-run"),
        wss_url: "wss://flyte.example.com/v1/ssh/run-1?target_port=6060&x=%41".to_owned(),
        tunnel_args: Vec::new(),
        headers_file: root.join("ssh debug/flyte-debug.headers"),
        host_key_alias: "flyte-debug.run-1.a0".to_owned(),
        known_hosts_file: root.join("ssh debug/known_hosts"),
        host_key_check: HostKeyCheck::Pinned,
    }
}

/// `ssh -G` of `alias` under `config`: keyword -> values.
fn resolved(config: &Path, alias: &str) -> BTreeMap<String, Vec<String>> {
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-T")
        .arg("-F")
        .arg(config)
        .arg(alias)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh -G failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    map
}

fn one<'a>(map: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    &map.get(key)
        .unwrap_or_else(|| panic!("ssh -G printed no {key}"))[0]
}

#[test]
fn rendered_block_snapshot() {
    let mut host = debug_host("flyte-debug", Path::new("/home/u"));
    insta::assert_snapshot!("pinned", host.render().unwrap());
    host.host_key_check = HostKeyCheck::LearnOnFirstUse;
    insta::assert_snapshot!("learn_on_first_use", host.render().unwrap());
}

#[test]
fn the_real_client_resolves_every_value() {
    let home = TempHome::new();
    let root = home.path().join("it's \"odd\" % dir");
    for check in [HostKeyCheck::Pinned, HostKeyCheck::LearnOnFirstUse] {
        let mut host = debug_host("flyte-debug", &root);
        host.host_key_check = check;
        // A user config with a catch-all block that would shadow ours if we came after it.
        let config = home.path().join("config");
        fs::write(
            &config,
            "Host *\n  User someone-else\n  StrictHostKeyChecking no\n",
        )
        .unwrap();
        install(
            &EditOptions {
                config_path: config.clone(),
                dry_run: false,
            },
            &host.alias,
            &host.lines().unwrap(),
        )
        .unwrap();
        let got = resolved(&config, "flyte-debug");
        assert_eq!(one(&got, "hostname"), "flyte-debug");
        assert_eq!(one(&got, "user"), "root");
        assert_eq!(one(&got, "identitiesonly"), "yes");
        assert_eq!(one(&got, "serveraliveinterval"), "30");
        assert_eq!(one(&got, "hostkeyalias"), "flyte-debug.run-1.a0");
        // ssh -G expands tokens in UserKnownHostsFile but shows IdentityFile before expansion
        // (its literal % still doubled); the connection test below proves both expand to one %.
        let escaped = |p: &PathBuf| p.display().to_string().replace('%', "%%");
        assert_eq!(one(&got, "identityfile"), escaped(&host.identity_file));
        assert_eq!(
            one(&got, "userknownhostsfile"),
            host.known_hosts_file.display().to_string()
        );
        assert_eq!(
            one(&got, "stricthostkeychecking"),
            if check == HostKeyCheck::Pinned {
                "true"
            } else {
                "accept-new"
            }
        );
        let proxy = one(&got, "proxycommand");
        assert!(proxy.contains(" tunnel 'wss://flyte.example.com/v1/ssh/run-1?target_port=6060&x=%%41' --http-headers-file "), "{proxy}");
    }
}

/// The whole block, used for real: ssh runs the ProxyCommand through a shell (a stand-in for
/// `flyte-run tunnel` that records its argv and relays with `ssh -W`), logs in with the
/// IdentityFile from a path with a space, a quote and '%', and checks the host key pinned in our
/// own known_hosts under the HostKeyAlias.
#[test]
fn a_connection_through_the_rendered_block_works() {
    let home = TempHome::new();
    let root = home.path().join("it's a 100% dir");
    let host = debug_host("flyte-debug", &root);
    fs::create_dir_all(host.identity_file.parent().unwrap()).unwrap();
    flyte_testkit::ssh_keygen(&host.identity_file, "debug-key");
    let public = fs::read_to_string(host.identity_file.with_extension("pub")).unwrap();
    let sshd = Sshd::builder().authorize(&public).start();

    let argv_file = home.path().join("proxy-argv");
    fs::create_dir_all(host.proxy_program.parent().unwrap()).unwrap();
    fs::write(
        &host.proxy_program,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\nexec ssh -F '{}' -W 127.0.0.1:{} {}\n",
            argv_file.display(),
            sshd.client_config().display(),
            sshd.port(),
            sshd.alias()
        ),
    )
    .unwrap();
    fs::set_permissions(&host.proxy_program, fs::Permissions::from_mode(0o755)).unwrap();

    pin_host_key(
        &host.known_hosts_file,
        &host.host_key_alias,
        sshd.host_public_key(),
    )
    .unwrap();
    let mut host = host;
    host.user = flyte_testkit::current_user();
    let config = home.path().join("config");
    install(
        &EditOptions {
            config_path: config.clone(),
            dry_run: false,
        },
        &host.alias,
        &host.lines().unwrap(),
    )
    .unwrap();

    let out = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args([
            "-o",
            "BatchMode=yes",
            "flyte-debug",
            "echo through-the-block",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-the-block\n");
    let argv = fs::read_to_string(&argv_file).unwrap();
    assert_eq!(
        argv,
        format!(
            "tunnel\n{}\n--http-headers-file\n{}\n",
            host.wss_url,
            host.headers_file.display()
        )
    );

    // Pinning another key for the alias makes the same command fail: the pin is enforced.
    let other = Sshd::start();
    pin_host_key(
        &host.known_hosts_file,
        &host.host_key_alias,
        other.host_public_key(),
    )
    .unwrap();
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", "flyte-debug", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"));
    // One entry per alias: the old key was replaced, not appended to.
    assert_eq!(
        fs::read_to_string(&host.known_hosts_file)
            .unwrap()
            .lines()
            .count(),
        1
    );
}

fn block(alias: &str) -> Vec<String> {
    vec![format!("Host {alias}"), "  User root".to_owned()]
}

#[test]
fn block_goes_before_the_first_host_or_match_line() {
    let cases: &[(&str, &str)] = &[
        (
            "",
            "# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\n",
        ),
        (
            "User me\nHost *\n  Port 22\n",
            "User me\n# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\nHost *\n  Port 22\n",
        ),
        (
            "Match all\n  Port 2\n",
            "# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\nMatch all\n  Port 2\n",
        ),
        // No blocks and no final newline: one is added, and the block ends without one.
        (
            "User me",
            "User me\n# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<",
        ),
        // Issue 13, defect 11: before a top-level Include, whose files may hold `Host *`.
        (
            "User me\nInclude config.d/*\nHost *\n",
            "User me\n# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\nInclude config.d/*\nHost *\n",
        ),
        (
            "include ~/.ssh/other\n",
            "# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\ninclude ~/.ssh/other\n",
        ),
        // CRLF files get CRLF lines.
        (
            "User me\r\nHost *\r\n",
            "User me\r\n# >>> flyte-run managed: dbg >>>\r\nHost dbg\r\n  User root\r\n# <<< flyte-run managed: dbg <<<\r\nHost *\r\n",
        ),
    ];
    for (before, after) in cases {
        assert_eq!(
            install_block(before, "dbg", &block("dbg")).unwrap(),
            *after,
            "{before:?}"
        );
        assert_eq!(
            remove_block(after, "dbg").unwrap().as_deref(),
            Some(*before),
            "{after:?}"
        );
    }
}

/// Issue 13, defect 11: an unmanaged `Host flyte-debug` block used to be merged silently (its
/// `ForwardAgent yes` and `RemoteCommand` applied to the debug connection).
#[test]
fn an_unmanaged_block_for_the_alias_is_refused_with_the_fix() {
    for text in [
        "Host dbg\n  ForwardAgent yes\n",
        "Host other dbg\n  RemoteCommand sh\n",
        "Host *\n  Port 2\nHost dbg\n  User x\n",
    ] {
        let err = install_block(text, "dbg", &block("dbg")).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, SshConfigError::AliasTaken { .. })
                && message.contains("choose another alias"),
            "{text:?}: {message}"
        );
    }
    // Wildcards are the user's defaults, not a block for this alias; ours goes first. A line
    // that names the alias only to exclude it, or names it in another case, never applies.
    for text in [
        "Host d*\n  Port 2\n",
        "Host !dbg dbg\n  Port 2\n",
        "Host DBG\n  Port 2\n",
    ] {
        assert!(
            install_block(text, "dbg", &block("dbg")).is_ok(),
            "{text:?}"
        );
    }
}

#[test]
fn doctor_sees_what_a_hand_edit_lets_override_a_managed_block() {
    let managed = "# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\n";
    let cases: &[(&str, &[(usize, &str)])] = &[
        // Installed by us, left alone: nothing to report.
        (&format!("{managed}Host *\n  User me\n"), &[]),
        (&format!("Host other\n  Port 2\n{managed}"), &[]),
        (
            &format!("Host *\n  User me\n{managed}"),
            &[(1, "host-before")],
        ),
        (
            &format!("Host d*\n  User me\n{managed}"),
            &[(1, "host-before")],
        ),
        (&format!("Host * !dbg\n  User me\n{managed}"), &[]),
        (&format!("Host !dbg dbg\n  User me\n{managed}"), &[]),
        (
            &format!("Host DBG D*\n  User me\n{managed}Host DBG\n  User me\n"),
            &[],
        ),
        (
            &format!("Include config.d/*\n{managed}"),
            &[(1, "include-before")],
        ),
        (
            &format!("Match all\n  User me\n{managed}"),
            &[(1, "match-before")],
        ),
        (
            &format!("{managed}Host dbg\n  ForwardAgent yes\n"),
            &[(5, "unmanaged")],
        ),
        (
            &format!("Host x dbg\n  ForwardAgent yes\n{managed}"),
            &[(1, "unmanaged")],
        ),
    ];
    for (text, expected) in cases {
        let found = shadowing(&Config::parse(text)).unwrap();
        let got: Vec<(usize, &str)> = found
            .iter()
            .map(|s| {
                let kind = match s.kind {
                    ShadowKind::HostBefore { .. } => "host-before",
                    ShadowKind::MatchBefore => "match-before",
                    ShadowKind::IncludeBefore => "include-before",
                    ShadowKind::UnmanagedBlock => "unmanaged",
                    ShadowKind::GlobalOption { .. } => "global",
                };
                (s.line, kind)
            })
            .collect();
        assert_eq!(&got, expected, "{text}");
        assert!(
            found
                .iter()
                .all(|s| s.alias == "dbg" && s.to_string().contains("\"dbg\""))
        );
    }
    // The real client agrees: the earlier `Host *` wins for User; a negated or other-case
    // pattern does not apply.
    let home = TempHome::new();
    let path = home.path().join("config");
    for (before, user) in [
        ("Host *", "me"),
        ("Host !dbg dbg", "root"),
        ("Host DBG D*", "root"),
    ] {
        fs::write(&path, format!("{before}\n  User me\n{managed}")).unwrap();
        assert_eq!(one(&resolved(&path, "dbg"), "user"), user, "{before}");
    }
}

#[test]
fn an_existing_block_is_replaced_in_place() {
    let before = "Host a\n# >>> flyte-run managed: dbg >>>\nHost dbg\n  User old\n# <<< flyte-run managed: dbg <<<\nHost b\n";
    let after = install_block(before, "dbg", &block("dbg")).unwrap();
    assert_eq!(
        after,
        "Host a\n# >>> flyte-run managed: dbg >>>\nHost dbg\n  User root\n# <<< flyte-run managed: dbg <<<\nHost b\n"
    );
    // Other aliases' blocks are separate.
    let both = install_block(&after, "other", &block("other")).unwrap();
    assert_eq!(remove_block(&both, "other").unwrap().unwrap(), after);
    // The second block went before the first header, so without dbg it is what a fresh install
    // into the user's own lines gives.
    let without_dbg = install_block("Host a\nHost b\n", "other", &block("other")).unwrap();
    assert_eq!(remove_block(&both, "dbg").unwrap().unwrap(), without_dbg);
}

#[test]
fn broken_markers_are_refused() {
    let begin = |a: &str| format!("# >>> flyte-run managed: {a} >>>\n");
    let end = |a: &str| format!("# <<< flyte-run managed: {a} <<<\n");
    let cases = [
        (
            format!(
                "{}{}{}{}",
                begin("dbg"),
                end("dbg"),
                begin("dbg"),
                end("dbg")
            ),
            "second block for \"dbg\"",
        ),
        (
            format!("{}{}{}{}", begin("dbg"), begin("x"), end("x"), end("dbg")),
            "starts inside the block",
        ),
        (format!("Host a\n{}", begin("dbg")), "never closed"),
        (
            format!("{}Host a\n", end("dbg")),
            "end marker for \"dbg\" without a start",
        ),
        (
            format!("{}{}", begin("dbg"), end("x")),
            "closed with the marker for \"x\"",
        ),
        // A marker that lost its suffix is still a marker.
        ("# >>> flyte-run managed: dbg\n".to_owned(), "never closed"),
    ];
    for (text, want) in cases {
        let err = install_block(&text, "other", &block("other")).unwrap_err();
        assert!(matches!(err, SshConfigError::Markers { .. }), "{err:?}");
        assert!(err.to_string().contains(want), "{text:?}: {err}");
        assert!(err.to_string().contains("Nothing was changed"), "{err}");
        assert!(remove_block(&text, "dbg").is_err());
    }
}

#[test]
fn bad_aliases_are_refused() {
    for alias in [
        "",
        "two words",
        "tab\there",
        "wild*",
        "q?",
        "!neg",
        "a,b",
        "100%",
        "-oProxyCommand=x",
        "a#b",
        "new\nline",
    ] {
        let err = install_block("", alias, &block("x")).unwrap_err();
        assert!(
            matches!(err, SshConfigError::InvalidAlias { .. }),
            "{alias:?}: {err:?}"
        );
        let mut host = debug_host("ok", Path::new("/h"));
        host.alias = alias.to_owned();
        assert!(host.lines().is_err(), "{alias:?}");
    }
}

fn opts(path: &Path) -> EditOptions {
    EditOptions {
        config_path: path.to_owned(),
        dry_run: false,
    }
}

#[test]
fn install_and_remove_on_disk() {
    let home = TempHome::new();
    let config = home.ssh_dir().join("config");
    // A missing ~/.ssh is created 0700 and the config 0600.
    let outcome = install(&opts(&config), "dbg", &block("dbg")).unwrap();
    assert_eq!(
        outcome,
        Outcome::Written {
            path: config.clone()
        }
    );
    assert_eq!(fs::metadata(home.ssh_dir()).unwrap().mode() & 0o777, 0o700);
    assert_eq!(fs::metadata(&config).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        install(&opts(&config), "dbg", &block("dbg")).unwrap(),
        Outcome::Unchanged {
            path: config.clone()
        }
    );

    // An existing file keeps its mode and every byte outside the block.
    let user = "# mine\r\nHost *\r\n  ServerAliveInterval 5\r\n";
    fs::write(&config, user).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    install(&opts(&config), "dbg", &block("dbg")).unwrap();
    assert_eq!(fs::metadata(&config).unwrap().mode() & 0o777, 0o644);
    let installed = fs::read_to_string(&config).unwrap();
    assert!(
        installed.starts_with("# mine\r\n# >>> flyte-run managed: dbg >>>\r\n"),
        "{installed:?}"
    );
    assert_eq!(
        remove(&opts(&config), "dbg").unwrap(),
        Outcome::Written {
            path: config.clone()
        }
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), user);
    assert_eq!(
        remove(&opts(&config), "dbg").unwrap(),
        Outcome::NotPresent {
            path: config.clone()
        }
    );
    // No temporary files left in ~/.ssh.
    assert_eq!(fs::read_dir(home.ssh_dir()).unwrap().count(), 1);
}

#[test]
fn dry_run_shows_a_diff_and_writes_nothing() {
    let home = TempHome::new();
    let config = home.path().join("config");
    fs::write(&config, "Host *\n  User me\n").unwrap();
    let outcome = install(
        &EditOptions {
            config_path: config.clone(),
            dry_run: true,
        },
        "dbg",
        &block("dbg"),
    )
    .unwrap();
    let Outcome::WouldChange { diff, .. } = outcome else {
        panic!("{outcome:?}")
    };
    insta::assert_snapshot!(diff.replace(&home.path().display().to_string(), "$HOME"));
    assert_eq!(fs::read_to_string(&config).unwrap(), "Host *\n  User me\n");
    // A missing directory is not created by a dry run either.
    let elsewhere = home.path().join("no/such/dir/config");
    assert!(matches!(
        install(
            &EditOptions {
                config_path: elsewhere.clone(),
                dry_run: true
            },
            "dbg",
            &block("dbg")
        )
        .unwrap(),
        Outcome::WouldChange { .. }
    ));
    assert!(!home.path().join("no").exists());
}

#[test]
fn symlinked_configs_are_written_through() {
    let home = TempHome::new();
    let dotfiles = home.path().join("dotfiles");
    fs::create_dir_all(&dotfiles).unwrap();
    fs::create_dir_all(home.ssh_dir()).unwrap();
    let target = dotfiles.join("ssh_config");
    fs::write(&target, "Host *\n").unwrap();
    let link = home.ssh_dir().join("config");
    std::os::unix::fs::symlink("../dotfiles/ssh_config", &link).unwrap();
    assert_eq!(
        install(&opts(&link), "dbg", &block("dbg")).unwrap(),
        Outcome::Written {
            path: target.clone()
        }
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert!(fs::read_to_string(&target).unwrap().contains("Host dbg"));
}

#[test]
fn read_only_targets_are_refused_with_the_block_to_add_by_hand() {
    let home = TempHome::new();
    let nix_store = home.path().join("store");
    fs::create_dir_all(&nix_store).unwrap();
    let target = nix_store.join("ssh_config");
    fs::write(&target, "Host *\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).unwrap();
    fs::create_dir_all(home.ssh_dir()).unwrap();
    let link = home.ssh_dir().join("config");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = install(&opts(&link), "dbg", &block("dbg")).unwrap_err();
    assert!(matches!(err, SshConfigError::ReadOnly { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("Add this block to it by hand:\nHost dbg\n  User root\n"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "Host *\n");

    // A writable file in a directory nobody may write to (immutable even for root).
    let locked = home.path().join("locked");
    fs::create_dir_all(&locked).unwrap();
    fs::write(locked.join("config"), "Host *\n").unwrap();
    let _guard = ReadOnlyDir::new(&locked);
    let err = install(&opts(&locked.join("config")), "dbg", &block("dbg")).unwrap_err();
    assert!(matches!(err, SshConfigError::ReadOnly { .. }), "{err:?}");
    assert_eq!(
        fs::read_to_string(locked.join("config")).unwrap(),
        "Host *\n"
    );
}

#[test]
fn oversized_and_binary_files_are_refused() {
    let home = TempHome::new();
    let config = home.path().join("config");
    let big = "#".repeat(usize::try_from(flyte_ssh_config::MAX_CONFIG_BYTES).unwrap() + 1);
    fs::write(&config, &big).unwrap();
    let err = install(&opts(&config), "dbg", &block("dbg")).unwrap_err();
    assert!(err.to_string().contains("1048576-byte limit"), "{err}");
    assert_eq!(fs::read(&config).unwrap().len(), big.len());

    fs::write(&config, b"Host \xff\n").unwrap();
    let err = install(&opts(&config), "dbg", &block("dbg")).unwrap_err();
    assert!(matches!(err, SshConfigError::NotUtf8 { .. }), "{err:?}");
}

#[test]
fn broken_markers_on_disk_leave_the_file_untouched() {
    let home = TempHome::new();
    let config = home.path().join("config");
    let text = "# >>> flyte-run managed: dbg >>>\nHost dbg\n# >>> flyte-run managed: dbg >>>\n";
    fs::write(&config, text).unwrap();
    assert!(install(&opts(&config), "dbg", &block("dbg")).is_err());
    assert!(remove(&opts(&config), "dbg").is_err());
    assert_eq!(fs::read_to_string(&config).unwrap(), text);
}

#[test]
fn concurrent_installs_of_different_aliases_all_survive() {
    let home = TempHome::new();
    let config = home.ssh_dir().join("config");
    fs::create_dir_all(home.ssh_dir()).unwrap();
    fs::write(&config, "Host *\n  User me\n").unwrap();
    std::thread::scope(|scope| {
        for i in 0..16 {
            let config = &config;
            scope.spawn(move || {
                let alias = format!("dbg-{i}");
                install(&opts(config), &alias, &block(&alias)).unwrap();
            });
        }
    });
    let text = fs::read_to_string(&config).unwrap();
    for i in 0..16 {
        assert!(
            text.contains(&format!("Host dbg-{i}\n")),
            "dbg-{i} lost:\n{text}"
        );
    }
    assert!(text.ends_with("Host *\n  User me\n"));
}

/// Lines a user's config may hold, markers of other tools and odd spacing included.
fn config_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("Host *".to_owned()),
        Just("Host dbg".to_owned()),
        Just("  HostName example.com".to_owned()),
        Just("Match host x exec \"true\"".to_owned()),
        Just("\tUser=me".to_owned()),
        Just("# >>> conda initialize >>>".to_owned()),
        Just("Include ~/.ssh/config.d/*".to_owned()),
        "[ -~]{0,40}".prop_filter("not our markers", |l| !l.contains("flyte-run managed")),
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (config_line(), prop_oneof![Just("\n"), Just("\r\n")]),
            0..12,
        ),
        any::<bool>(),
    )
        .prop_map(|(lines, trailing)| {
            let mut text: String = lines.iter().flat_map(|(l, e)| [l.as_str(), *e]).collect();
            if !trailing && text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        })
}

proptest! {
    #[test]
    fn parse_render_is_byte_exact(text in "(?s).{0,300}") {
        prop_assert_eq!(Config::parse(&text).render(), text);
    }

    #[test]
    fn install_then_remove_restores_and_install_is_idempotent(text in config_text(), alias in "[a-z][a-z0-9-]{0,12}") {
        let lines = debug_host(&alias, Path::new("/home/u")).lines().unwrap();
        let taken = text.lines().any(|l| l.trim_end_matches('\r').strip_prefix("Host ").is_some_and(|p| p.split_whitespace().any(|p| p == alias)));
        if taken {
            let refused = matches!(install_block(&text, &alias, &lines), Err(SshConfigError::AliasTaken { .. }));
            prop_assert!(refused, "an unmanaged Host {} block must be refused", alias);
            return Ok(());
        }
        let once = install_block(&text, &alias, &lines).unwrap();
        let twice = install_block(&once, &alias, &lines).unwrap();
        prop_assert_eq!(&once, &twice);
        prop_assert_eq!(remove_block(&once, &alias).unwrap(), Some(text.clone()));
        prop_assert_eq!(remove_block(&text, &alias).unwrap(), None);
    }
}
