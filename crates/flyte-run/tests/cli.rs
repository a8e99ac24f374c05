//! The `flyte-run` binary as users run it: scripts, errors, and the keys/kservice modules.
#![allow(clippy::disallowed_methods)]
// Tests write fixtures and start processes directly.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Output, Stdio};

use flyte_testkit::TempHome;

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

fn flyte_run(home: &TempHome, args: &[&str]) -> Output {
    home.command(BIN)
        .args(args)
        .env_remove("FLYTE_RUN_LOG")
        .output()
        .unwrap()
}

/// `code`, stdout and stderr of a run, with the temporary home replaced by `$HOME`.
fn transcript(home: &TempHome, args: &[&str]) -> String {
    let out = flyte_run(home, args);
    let text = format!(
        "code: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    text.replace(&home.path().display().to_string(), "$HOME")
}

#[test]
fn help_and_version() {
    let home = TempHome::new();
    insta::assert_snapshot!(transcript(&home, &["--help"]));
    let out = flyte_run(&home, &["--version"]);
    // The version, the commit built from and that commit's date.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let out_date = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", git(&["log", "-1", "--format=%ct"])),
            "+%F",
        ])
        .output()
        .unwrap();
    let date = String::from_utf8_lossy(&out_date.stdout).trim().to_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "flyte-run {} ({commit} {date})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The generated reference documents every function of the contract (DESIGN.md's "The Rhai
/// surface"), each with a doc comment, and the editor definitions declare them in their module.
#[test]
fn the_script_reference_documents_every_contract_function() {
    let home = TempHome::new();
    let dir = home.path().join("ref");
    let out = flyte_run(&home, &["script-reference", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = fs::read_to_string(dir.join("reference.md")).unwrap();
    for (module, function) in [
        ("keys", "ensure_keypair"),
        ("auth", "ensure_api_key"),
        ("auth", "bearer_token"),
        ("debug", "launch_env"),
        ("debug", "connect"),
        ("runs", "launch"),
        ("runs", "wait"),
        ("runs", "details"),
        ("runs", "abort"),
        ("ssh", "install"),
        ("ssh", "remove"),
        ("ssh", "render"),
        ("ssh", "exec"),
        ("runner", "run"),
        ("runner", "kubectl"),
        ("runner", "curl"),
        ("runner", "port_forward"),
        ("kservice", "name"),
        ("kservice", "public_ingress"),
        ("git", "clone"),
    ] {
        let entry = format!("- `{module}::{function}(");
        let at = page
            .find(&entry)
            .unwrap_or_else(|| panic!("{entry} is not in the reference:\n{page}"));
        // The line after the signature is its documentation.
        let doc = page[at..].lines().nth(1).unwrap_or_default();
        assert!(
            doc.starts_with("  ") && doc.trim().len() > 3,
            "{entry}: {doc:?}"
        );
        let definitions = fs::read_to_string(dir.join(format!("{module}.d.rhai"))).unwrap();
        assert!(
            definitions.contains(&format!("fn {function}(")),
            "{module}.d.rhai lacks {function}"
        );
    }
}

/// Issue 16: with only Flyte's `~/.flyte/config.yaml`, `config show` reports its endpoint and
/// every setting shared with Flyte's SDK, each with its source; the environment wins over the
/// file, `--config` picks another file, and the API key never shows.
#[test]
fn config_show_reads_flytes_file_and_names_each_source() {
    let home = TempHome::new();
    fs::create_dir_all(home.path().join(".flyte")).unwrap();
    fs::write(
        home.path().join(".flyte/config.yaml"),
        "admin:\n  endpoint: dns:///flyte.example.com\n  authType: DeviceFlow\n  clientId: cli\n  scopes: [all]\ntask:\n  project: ml\n  domain: development\n",
    )
    .unwrap();
    let show = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut command = home.command(BIN);
        command
            .env_remove("FLYTE_ENDPOINT")
            .env_remove("FLYTE_RUN_LOG");
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let out = command.args(args).output().unwrap();
        let text = format!(
            "code: {}\n{}{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.replace(&home.path().display().to_string(), "$HOME")
    };
    let shown = show(
        &[
            ("FLYTE_TASK_DOMAIN", "staging"),
            ("FLYTE_API_KEY", "c2VjcmV0LWtleS12YWx1ZQ=="),
        ],
        &["config", "show"],
    );
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
    insta::assert_snapshot!(shown);

    // --config names another file; a missing one is refused with its name.
    let other = home.path().join("other.yaml");
    fs::write(&other, "admin:\n  endpoint: https://other.example.com\n").unwrap();
    let shown = show(
        &[],
        &["config", "show", "--config", other.to_str().unwrap()],
    );
    assert!(
        shown.contains(
            "endpoint:    https://other.example.com (from $HOME/other.yaml: admin.endpoint)"
        ),
        "{shown}"
    );
    let shown = show(&[], &["config", "show", "--config", "/nonexistent.yaml"]);
    assert!(
        shown.contains("--config /nonexistent.yaml: no such file"),
        "{shown}"
    );
    // Before a script, as the script's configuration.
    let shown = show(&[], &["--config", other.to_str().unwrap(), "-e", "\"ok\""]);
    assert!(shown.starts_with("code: 0\nok"), "{shown}");
    // Not YAML: the file is named.
    fs::write(&other, "admin: [unclosed\n").unwrap();
    let shown = show(
        &[],
        &["config", "show", "--config", other.to_str().unwrap()],
    );
    assert!(
        shown.contains("$HOME/other.yaml: not a Flyte config file"),
        "{shown}"
    );
}

/// Issue 16, bad input: a config.yaml that comes with the directory the user stands in cannot
/// run a command or name a secret; a Flyte config file others can write is refused; a file
/// `$FLYTECTL_CONFIG` names must exist (no falling through to another cluster's file).
#[test]
fn flyte_config_files_that_could_be_someone_elses_are_refused() {
    let home = TempHome::new();
    let project = home.path().join("cloned-repo");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("config.yaml"),
        "admin:\n  endpoint: https://attacker.example\n  authType: ExternalCommand\n  command: [sh, -c, 'touch pwned']\n",
    )
    .unwrap();
    let run = |dir: &std::path::Path, env: &[(&str, &str)]| {
        let mut command = home.command(BIN);
        command.current_dir(dir).env_remove("FLYTE_ENDPOINT");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.args(["config", "show"]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&project, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("(found in the working directory) sets admin.command, which runs a command or reads a secret"),
        "{stderr}"
    );
    assert!(!project.join("pwned").exists());

    // The same file in the user's own ~/.flyte is theirs: accepted (nothing is run by `show`).
    fs::create_dir_all(home.path().join(".flyte")).unwrap();
    fs::copy(
        project.join("config.yaml"),
        home.path().join(".flyte/config.yaml"),
    )
    .unwrap();
    let (code, stderr) = run(home.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    // ... unless others can write it.
    let file = home.path().join(".flyte/config.yaml");
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let (code, stderr) = run(home.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is writable by other users"), "{stderr}");
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let (code, stderr) = run(
        home.path(),
        &[("FLYTECTL_CONFIG", "/nonexistent/config.yaml")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("$FLYTECTL_CONFIG /nonexistent/config.yaml: no such file"),
        "{stderr}"
    );
}

#[test]
fn kservice_module() {
    let home = TempHome::new();
    let cases = [
        r#"kservice::name("proj", "dev", "MyApp")"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp")"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp", #{ base_domain: "apps.example.com" })"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp", #{ base_domain: "apps.example.com", scheme: "http", port: 8080 })"#,
        // Bad input: each a script error with the library's message, exit 1.
        r#"kservice::name("", "dev", "MyApp")"#,
        r#"kservice::name("proj", "dev", "my_app")"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp", #{ base_domian: "typo.example.com" })"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp", #{ base_domain: "x.com", port: 70000 })"#,
        r#"kservice::public_ingress("proj", "dev", "MyApp", #{ base_domain: 5 })"#,
    ];
    let mut out = String::new();
    for script in cases {
        writeln!(
            out,
            "$ flyte-run -e '{script}'\n{}",
            transcript(&home, &["-e", script])
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn keys_module_creates_the_pair_under_home() {
    let home = TempHome::new();
    let out = flyte_run(&home, &["-e", "keys::ensure_keypair()"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = home.ssh_debug_dir().join("id_ed25519");
    assert_eq!(value["private_key_path"], key.display().to_string());
    assert_eq!(
        value["public_key"].as_str().unwrap(),
        fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
    );
    assert!(
        value["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
}

#[test]
fn sixteen_processes_at_once_make_one_key_pair() {
    let home = TempHome::new();
    let children: Vec<_> = (0..16)
        .map(|_| {
            home.command(BIN)
                .args(["-e", "keys::ensure_keypair().public_key"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let keys: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "processes disagree: {keys:#?}"
    );
    let mut names: Vec<_> = fs::read_dir(home.ssh_debug_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["id_ed25519", "id_ed25519.pub"]);
    assert_eq!(
        fs::read_to_string(home.ssh_debug_dir().join("id_ed25519.pub")).unwrap(),
        keys[0]
    );
}

#[test]
fn the_private_key_is_0600_whatever_the_umask() {
    let home = TempHome::new();
    let status = home
        .command("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec '{BIN}' -e 'keys::ensure_keypair()'"
        ))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o777;
    let dir = home.ssh_debug_dir();
    assert_eq!(mode(&dir.join("id_ed25519")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("id_ed25519.pub")), 0o644);
}

#[test]
fn script_errors_name_file_line_and_column() {
    let home = TempHome::new();
    let dir = home.path().join("playbooks");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("syntax.rhai"), "let x = 1;\nlet y = ;\n").unwrap();
    fs::write(
        dir.join("runtime.rhai"),
        "let a = 1;\n\nkservice::name(\"proj\", \"dev\", \"bad name\")\n",
    )
    .unwrap();
    fs::write(
        dir.join("thrown.rhai"),
        "// a playbook\nthrow \"not built yet\";\n",
    )
    .unwrap();
    fs::write(dir.join("undefined.rhai"), "print(nope);\n").unwrap();
    let mut out = String::new();
    for args in [
        vec!["playbooks/missing.rhai"],
        vec!["playbooks/syntax.rhai"],
        vec!["playbooks/runtime.rhai"],
        vec!["playbooks/thrown.rhai"],
        vec!["playbooks/undefined.rhai"],
        vec!["-e", "eval(\"1\")"],
        vec!["-e", "loop {}"],
    ] {
        let mut cmd = home.command(BIN);
        let run = cmd.current_dir(home.path()).args(&args).output().unwrap();
        writeln!(
            out,
            "$ flyte-run {}\ncode: {:?}\n{}",
            args.join(" "),
            run.status.code(),
            String::from_utf8_lossy(&run.stderr)
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}

#[test]
fn wall_clock_timeout_stops_a_script() {
    let home = TempHome::new();
    // Without --timeout this loop would run until the operation limit; with it, the clock wins.
    let out = flyte_run(
        &home,
        &[
            "--timeout",
            "0.2",
            "-e",
            "let i = 0; loop { i += 1; if i < 0 { break; } }",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ran longer than --timeout"), "{stderr}");

    // A blocking call is cut to what is left of the limit too: without that, this sleeps ten
    // minutes (and nextest's terminate-after fails the test).
    let out = flyte_run(&home, &["--timeout", "0.3", "-e", "sleep(600); 1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ran longer than --timeout"), "{stderr}");
}

#[test]
fn set_gives_typed_args_and_env_reads_the_environment() {
    let home = TempHome::new();
    let out = home
        .command(BIN)
        .env("FLYTE_RUN_TEST_VAR", "from-env")
        .args(["--set", "n=41", "--set", "flag=true", "--set", "name=x y"])
        .args(["-e", r#"`${args.n + 1} ${type_of(args.flag)} ${args.name} ${env("FLYTE_RUN_TEST_VAR")} ${env("FLYTE_RUN_UNSET_VAR") == ()}`"#])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42 bool x y from-env true\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = flyte_run(&home, &["--set", "no-equals", "-e", "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected KEY=VALUE"));
}

#[test]
fn imports_resolve_beside_the_playbook_and_in_scripts() {
    let home = TempHome::new();
    let root = home.path();
    fs::create_dir_all(root.join("playbooks")).unwrap();
    fs::create_dir_all(root.join("scripts")).unwrap();
    fs::write(
        root.join("scripts/greet.rhai"),
        "fn hello(n) { `hello ${n}` }\n",
    )
    .unwrap();
    fs::write(
        root.join("playbooks/local.rhai"),
        "export const WHO = \"world\";\n",
    )
    .unwrap();
    fs::write(
        root.join("playbooks/main.rhai"),
        "import \"greet\" as g;\nimport \"local\" as l;\nprint(g::hello(l::WHO));\n",
    )
    .unwrap();
    let out = home
        .command(BIN)
        .arg(root.join("playbooks/main.rhai"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello world\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SSH_INFO: &str = r#"#{ host_alias: "flyte-debug", wss_url: "wss://flyte.example.com/v1/r?target_port=6060",
    run_name: "r1", action_name: "a0", proxy_program: "/opt/flyte run/flyte-run" }"#;

#[test]
fn ssh_module_renders_installs_and_removes() {
    let home = TempHome::new();
    insta::assert_snapshot!(transcript(
        &home,
        &["-e", &format!("ssh::render({SSH_INFO})")]
    ));

    // --dry-run prints the diff and writes nothing.
    let dry = transcript(
        &home,
        &[
            "--dry-run",
            "-e",
            &format!("ssh::install({SSH_INFO}).changed"),
        ],
    );
    insta::assert_snapshot!("ssh_install_dry_run", dry);
    assert!(!home.ssh_dir().exists(), "a dry run created ~/.ssh");

    let script = format!(
        r#"let info = {SSH_INFO}; info.host_key = "{key}"; let r = ssh::install(info); r.changed"#,
        key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh2c3d5b3VsZGxpa2V0b2tub3d3aGF0dGhpc2lzZm9y pod"
    );
    let out = flyte_run(&home, &["-e", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "true\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = fs::read_to_string(home.ssh_dir().join("config")).unwrap();
    assert!(config.contains("Host flyte-debug\n"), "{config}");
    assert!(config.contains("StrictHostKeyChecking yes\n"), "{config}");
    let known = fs::read_to_string(home.ssh_debug_dir().join("known_hosts")).unwrap();
    assert!(
        known.starts_with("r1.a0.development.flytesnacks.flyte-debug ssh-ed25519 AAAA"),
        "{known}"
    );

    let out = flyte_run(&home, &["-e", r#"ssh::remove("flyte-debug").changed"#]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "true\n");
    assert_eq!(
        fs::read_to_string(home.ssh_dir().join("config")).unwrap(),
        ""
    );

    // Bad input names the problem.
    insta::assert_snapshot!(
        "ssh_bad_input",
        [
            r#"ssh::render(#{ host_alias: "bad alias", wss_url: "wss://x" })"#,
            r#"ssh::render(#{ host_alias: "ok" })"#,
            r#"ssh::render(#{ wss_url: "wss://x", hostalias: "typo" })"#,
            r#"ssh::install(#{ wss_url: "wss://x" }, #{ dry_run: "yes" })"#,
        ]
        .iter()
        .map(|s| format!("$ flyte-run -e '{s}'\n{}", transcript(&home, &["-e", s])))
        .collect::<Vec<_>>()
        .join("\n")
    );
}

#[test]
fn auth_module_keys_and_tokens_never_print_secrets() {
    use flyte_testkit::control_plane::ControlPlane;
    let plane = ControlPlane::start();
    let home = TempHome::new();
    let script = r#"
        let key = auth::ensure_api_key("flyte-ssh-debug");
        print(key);
        print(`client id: ${key.client_id}`);
        let token = auth::bearer_token();
        print(token);
        debug(token);
        print(`expires later: ${token.expires_at > 0}`);
        print(`header ok: ${token.authorization().starts_with("Bearer ey")}`);
        let again = auth::bearer_token(#{ refresh: false });
        "done"
    "#;
    let run = || {
        home.command(BIN)
            .args(["--endpoint", plane.base_url(), "-e", script])
            .output()
            .unwrap()
    };
    let out = run();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("ApiKey(client_id=key-0, secret=<redacted>)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client id: key-0\n")
            && stdout.contains("expires later: true\n")
            && stdout.contains("header ok: true\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Token(<redacted>, expires at Some("),
        "{stdout}"
    );
    // Neither the API key's secret nor any JWT reaches stdout or stderr.
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("key-secret") && !text.contains("eyJ"),
            "{text}"
        );
    }
    assert_eq!((plane.api_keys_created(), plane.mints()), (1, 1));
    let key_mode = fs::metadata(home.ssh_debug_dir().join("api-key"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    // A second process reuses the key and the cached token.
    assert!(run().status.success());
    assert_eq!((plane.api_keys_created(), plane.mints()), (1, 1));
}

#[test]
fn auth_module_bad_input() {
    // Opting in to plain http for a remote host gets past the endpoint check (and then fails to
    // connect: 0.0.0.0 is not loopback by name, yet nothing leaves this machine).
    let home_in = TempHome::new();
    let out = home_in
        .command(BIN)
        .env("FLYTE_INSECURE", "1")
        .args([
            "--endpoint",
            "http://0.0.0.0:1",
            "-e",
            "auth::ensure_api_key(\"x\")",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unencrypted") && stderr.contains("unavailable"),
        "{stderr}"
    );
    let plane = flyte_testkit::control_plane::ControlPlane::start();
    let home = TempHome::new();
    // No endpoint, an unknown option, interactive login, plain http to a remote host.
    let errors = [
        (
            vec!["-e", "auth::ensure_api_key(\"x\")"],
            "no control plane endpoint",
        ),
        (
            vec![
                "--endpoint",
                plane.base_url(),
                "-e",
                "auth::bearer_token(#{ refesh: true })",
            ],
            "unknown option `refesh`",
        ),
        (
            vec![
                "--endpoint",
                plane.base_url(),
                "-e",
                "auth::bearer_token(#{ use_api_key: false })",
            ],
            "interactive login is not supported",
        ),
        (
            vec![
                "--endpoint",
                "http://flyte.example.com",
                "-e",
                "auth::bearer_token()",
            ],
            "plain http sends tokens unencrypted",
        ),
    ];
    for (args, want) in errors {
        let out = home
            .command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn app_playbook_lists_service_names_and_urls() {
    let home = TempHome::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let cases: [&[&str]; 4] = [
        &[],
        &[
            "--set",
            "apps=web, My-App",
            "--set",
            "base_domain=apps.example.com",
            "--set",
            "port=8443",
        ],
        // Bad input: a name Kubernetes cannot take, a port out of range.
        &["--set", "apps=bad_app"],
        &["--set", "base_domain=x.com", "--set", "port=70000"],
    ];
    let mut out = String::new();
    for args in cases {
        let run = home
            .command(BIN)
            .current_dir(root)
            .arg("playbooks/app.rhai")
            .args(args)
            .env_remove("FLYTE_RUN_LOG")
            .output()
            .unwrap();
        writeln!(
            out,
            "$ flyte-run playbooks/app.rhai {}\ncode: {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            run.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}

/// `--dry-run` of the main playbook on a fresh machine: every external action is printed, none
/// is performed (no sandbox started, no ssh config written, no ssh run).
#[test]
fn debug_playbook_dry_run_prints_what_it_would_do() {
    let home = TempHome::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = home
        .command(BIN)
        .current_dir(root)
        .env_remove("FLYTE_ENDPOINT")
        .env_remove("FLYTE_RUN_LOG")
        .args(["playbooks/debug.rhai", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!home.path().join(".flyte/sandbox").exists());
    assert!(!home.path().join(".ssh").exists());
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(&home.path().display().to_string()), "[HOME]");
    settings.add_filter(&regex_escape(BIN), "[BIN]");
    settings.add_filter(r"SHA256:[A-Za-z0-9+/]{43}", "[FINGERPRINT]");
    settings.bind(|| {
        insta::assert_snapshot!(String::from_utf8_lossy(&run.stdout));
    });
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// `scripts/retry.rhai`, as playbooks import it: a flaky call succeeds on a later attempt with
/// the waits doubling; when every attempt fails, the last error stops the script at the caller.
#[test]
fn retry_module_backs_off_and_rethrows_the_last_error() {
    let home = TempHome::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = |script: &str| {
        home.command(BIN)
            .current_dir(root)
            .args(["-e", script])
            .output()
            .unwrap()
    };
    let out = run(
        r#"import "retry" as retry; let n = 0; retry::with_backoff(4, 0.01, || { n += 1; if n < 3 { throw `flaky ${n}` } `ok after ${n}` })"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "attempt 1 of 4 failed (flaky 1); retrying in 0.01 s\n\
         attempt 2 of 4 failed (flaky 2); retrying in 0.02 s\n\
         ok after 3\n"
    );
    for (script, want) in [
        (
            r#"import "retry" as retry; retry::with_backoff(2, 0, || { throw "still down" })"#,
            "error: <-e>:1:33: still down (in retry::with_backoff",
        ),
        (
            r#"import "retry" as retry; retry::with_backoff(0, 1, || 1)"#,
            "attempts must be a positive integer, not 0",
        ),
    ] {
        let out = run(script);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(want), "{script}: {stderr}");
    }
}
