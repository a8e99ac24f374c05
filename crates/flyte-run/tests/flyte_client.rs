//! Issue 14: Flyte's own client stack against the sandbox. The flyteidl2 Connect clients Flyte's
//! SDK uses (`PyPI` `flyte==2.12.1` with its `flyteidl2`, binary protobuf, gzip-compressed
//! requests, over the SDK's own HTTP client) call every read path, the logs service and abort;
//! each answer is decoded by the official classes. Runs in the interop venv `cargo xtask ci`
//! creates (`FLYTE_INTEROP_PYTHON` points elsewhere).
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use flyte_testkit::TempHome;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

struct Home(TempHome);

impl Home {
    fn run(&self, args: &[&str]) -> Output {
        self.0
            .command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            .env_remove("DAP_RUNNER_SSH_HOST")
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.run(&["sandbox", "stop"]);
    }
}

#[test]
fn flytes_own_client_reads_watches_tails_and_aborts_a_sandbox_run() {
    let home = Home(TempHome::new());
    let script = r#"
        runs::launch(#{ name: "fc", command: ["sh", "-c", "echo hello-from-task; exec sleep 120"] });
        runs::wait("fc", #{ timeout: 60, poll_interval: 0 });
        auth::ensure_api_key("flyte-ssh-debug");
        print(auth::bearer_token().authorization());
    "#;
    let out = home.run(&["-e", script]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let authorization = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let token = authorization.strip_prefix("Bearer ").unwrap().to_owned();
    let endpoint = stderr
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no endpoint in {stderr}"))
        .to_owned();

    let mut child = Command::new(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_client.py"
        ))
        .args([&endpoint, "fc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: stderr {:?}, stdout {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = [
        (
            "/oauth2/token_endpoint",
            Value::from(format!("{endpoint}/oauth2/token")),
        ),
        ("/client_config/client_id", "flyte-run".into()),
        ("/projects/0", "flytesnacks".into()),
        ("/projects_without_token/error", "unauthenticated".into()),
        ("/list_runs/0", "fc".into()),
        ("/details/phase", "ACTION_PHASE_RUNNING".into()),
        ("/actions/0", "a0".into()),
        ("/action", "ACTION_PHASE_RUNNING".into()),
        ("/missing/error", "not_found".into()),
        ("/logs/0", "hello-from-task".into()),
        ("/abort", "ok".into()),
        ("/not_served/error", "unimplemented".into()),
        (
            "/json",
            serde_json::json!(["fc", "a0", "fc", "a0", "flytesnacks"]),
        ),
    ];
    for (pointer, value) in expected {
        assert_eq!(got.pointer(pointer), Some(&value), "{pointer} in {got}");
    }
    let watched: Vec<&str> = got["watched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(watched.last(), Some(&"ACTION_PHASE_ABORTED"), "{got}");
}

/// Issue 14's "done when": Flyte's own `flyte` CLI, configured only by the file
/// `flyte-run sandbox start` wrote (TLS with the sandbox's CA, client credentials), lists the
/// run, shows its action and its logs, and aborts it.
#[test]
fn flytes_own_cli_configured_by_the_written_file_lists_shows_tails_and_aborts() {
    let home = Home(TempHome::new());
    let out = home.run(&["sandbox", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = r#"
        runs::launch(#{ name: "cli-run", command: ["sh", "-c", "echo hello-from-task; exec sleep 120"] });
        runs::wait("cli-run", #{ timeout: 60, poll_interval: 0 });
    "#;
    let out = home.run(&["-e", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = home.0.path().join(".flyte/sandbox/flyte-config.yaml");
    let flyte_cli = flyte_testkit::interop_python().with_file_name("flyte");
    let flyte = |args: &[&str]| {
        let out = Command::new(&flyte_cli)
            .arg("--config")
            .arg(&config)
            .args(args)
            // No ~/.flyte/config.yaml or keyring of the developer's: only the written file.
            .env("HOME", home.0.path())
            .env("COLUMNS", "250")
            .env("NO_COLOR", "1")
            .current_dir(home.0.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "flyte {args:?}: {text}");
        text
    };
    for (args, expected) in [
        (&["get", "project"][..], &["flytesnacks"][..]),
        (&["get", "run"], &["cli-run", "ACTION_PHASE_RUNNING"]),
        (
            &["get", "run", "cli-run"],
            &["cli-run", "ACTION_PHASE_RUNNING"],
        ),
        (
            &["get", "action", "cli-run"],
            &["a0", "ACTION_PHASE_RUNNING"],
        ),
        (
            &["get", "action", "cli-run", "a0"],
            &["a0", "ACTION_PHASE_RUNNING"],
        ),
        (&["abort", "run", "cli-run"], &["aborted"]),
        (&["get", "run", "cli-run"], &["ACTION_PHASE_ABORTED"]),
        // Of a running action, `get logs` follows until it ends; of an ended one it returns.
        (&["get", "logs", "cli-run"], &["hello-from-task"]),
    ] {
        let text = flyte(args);
        for word in expected {
            assert!(text.contains(word), "flyte {args:?} lacks {word:?}: {text}");
        }
    }
}

/// Flyte's SDK (`flyte.init_from_config` with the written file): `Run.listall`, `Run.get`,
/// `Action.get`, `abort` and `wait`.
#[test]
fn flytes_own_sdk_lists_gets_aborts_and_waits_for_a_sandbox_run() {
    let home = Home(TempHome::new());
    let script = r#"
        runs::launch(#{ name: "sdk-run", command: ["sleep", "120"] });
        runs::wait("sdk-run", #{ timeout: 60, poll_interval: 0 });
    "#;
    let out = home.run(&["-e", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = home.0.path().join(".flyte/sandbox/flyte-config.yaml");
    let out = Command::new(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_sdk.py"
        ))
        .arg(&config)
        .arg("sdk-run")
        .env("HOME", home.0.path())
        .current_dir(home.0.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "listall": ["sdk-run"],
            "get": ["sdk-run", "ActionPhase.RUNNING"],
            "action": ["a0", "ActionPhase.RUNNING"],
            "waited": "ActionPhase.ABORTED",
        })
    );
}

/// Flyte's API-key format (`base64(endpoint:client_id:client_secret:org)`, split on the first
/// three `:`) cannot carry a port. Ours writes the endpoint's `:` as `%3A`, so Flyte's own
/// decoder still reads the client id, the secret and the org of a sandbox key; only the endpoint
/// field is ours alone (Flyte uses its configured endpoint).
#[test]
fn flytes_decoder_reads_the_credential_fields_of_a_key_for_an_endpoint_with_a_port() {
    let home = Home(TempHome::new());
    let out = home.run(&["sandbox", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let encoded = std::fs::read_to_string(home.0.path().join(".flyte/sandbox/credential")).unwrap();
    let ours = flyte_auth::ApiKey::decode(&encoded).unwrap();
    assert!(ours.endpoint.contains(':'), "{}", ours.endpoint);
    let mut child = Command::new(flyte_testkit::interop_python())
        .args([
            "-c",
            "import json, sys\n\
             from flyte.remote._client.auth._auth_utils import decode_api_key\n\
             print(json.dumps(decode_api_key(sys.stdin.read().strip())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(encoded.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs[1], ours.client_id);
    assert_eq!(theirs[2], ours.client_secret.expose());
    assert_eq!(theirs[3], "None", "an empty org reads as Flyte's \"None\"");
}

/// The file Flyte's CLI gets for the sandbox (TLS with its CA), with the login flow `auth_type`
/// instead of the client secret, and no keyring (Flyte's token cache; none runs here).
fn login_config(home: &Home, auth_type: &str) -> std::path::PathBuf {
    let written =
        std::fs::read_to_string(home.0.path().join(".flyte/sandbox/flyte-config.yaml")).unwrap();
    let config: String = written
        .lines()
        .filter(|l| !l.contains("clientId") && !l.contains("clientSecretLocation"))
        .map(|l| {
            if l.contains("authType") {
                format!("  authType: {auth_type}\n  disableKeyring: true\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let path = home.0.path().join(format!("{auth_type}.yaml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Issue 16: Flyte's own SDK logs in to the sandbox with `authType: DeviceFlow` (its
/// `DeviceCodeAuthenticator`, discovery through `AuthMetadataService`): it prints the
/// verification URL with the user code, the sandbox's owner approves it with
/// `flyte-run sandbox approve`, and the SDK's calls go through with the token it polled for.
#[test]
fn flytes_own_sdk_logs_in_with_the_device_flow() {
    use std::io::BufRead as _;
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "device-run", command: ["true"] })"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_path = login_config(&home, "DeviceFlow");
    let mut child = Command::new(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_login.py"
        ))
        .arg(&config_path)
        .env("HOME", home.0.path())
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "400")
        .current_dir(home.0.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let code = stdout.by_ref().find_map(|line| {
        let line = line.unwrap();
        let code = line
            .split_once("user_code=")
            .map(|(_, rest)| rest.chars().take(9).collect::<String>());
        shown.push(line);
        code
    });
    let code = code.unwrap_or_else(|| panic!("the SDK showed no code: {shown:?}"));
    let approved = home.run(&["sandbox", "approve", &code]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let rest: Vec<String> = stdout.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: {shown:?} {rest:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(listed, serde_json::json!({"listall": ["device-run"]}));
}

/// Issue 16: Flyte's own SDK logs in to the sandbox with `authType: Pkce` (its
/// `PKCEAuthenticator`: S256 challenge, its own loopback callback server on the redirect URI
/// `GetPublicClientConfig` names, the code exchanged with the verifier). The browser is
/// testkit's `fixtures/headless_browser.py`, which reads the user code off the page, approves it as the
/// sandbox's owner and follows the redirect.
#[test]
fn flytes_own_sdk_logs_in_with_pkce() {
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "pkce-run", command: ["true"] })"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_path = login_config(&home, "Pkce");
    let browser = flyte_testkit::headless_browser(home.0.path());
    // Bounded: a login that never completes fails the test instead of hanging it.
    let out = Command::new("timeout")
        .arg("120")
        .arg(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_login.py"
        ))
        .arg(&config_path)
        .env("HOME", home.0.path())
        .env("BROWSER", browser)
        .env("FLYTE_RUN_BIN", BIN)
        .env("NO_COLOR", "1")
        .current_dir(home.0.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(listed, serde_json::json!({"listall": ["pkce-run"]}));
}

/// Issue 16's "done when": on a machine whose only configuration is the Flyte `config.yaml`
/// that `flyte-run config init --flyte` wrote (TLS with the sandbox's CA, and `authType: Pkce`,
/// which it found out from the deployment), Flyte's own SDK and flyte-run both log in with
/// that file unchanged, and `flyte-run debug RUN --shell` opens a shell in the run's task.
#[test]
fn flytes_sdk_and_flyte_run_share_the_file_config_init_writes() {
    use std::io::Write as _;
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "shared", command: ["sleep", "120"] })"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sandbox = home.0.path().join(".flyte/sandbox");
    let endpoint = std::fs::read_to_string(sandbox.join("endpoint")).unwrap();
    let authority = endpoint.trim().trim_start_matches("http://");
    let out = home.run(&[
        "config",
        "init",
        "--flyte",
        "--endpoint",
        &format!("https://{authority}"),
        "--ca-cert",
        sandbox.join("ca.pem").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = home.0.path().join(".flyte/config.yaml");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains(&format!("endpoint: \"dns:///{authority}\""))
            && written.contains("authType: \"Pkce\"")
            && written.contains("insecure: false"),
        "{written}"
    );
    // Again without --force: refused, the file kept.
    let again = home.run(&[
        "config",
        "init",
        "--flyte",
        "--endpoint",
        "https://x.example",
    ]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    let browser = flyte_testkit::headless_browser(home.0.path());
    let sdk = Command::new("timeout")
        .arg("120")
        .arg(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_login.py"
        ))
        .arg(&config)
        .env("HOME", home.0.path())
        .env("BROWSER", &browser)
        .env("FLYTE_RUN_BIN", BIN)
        // No OS keyring here: Flyte's token cache is a no-op.
        .env("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
        .current_dir(home.0.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&sdk.stdout);
    assert!(
        sdk.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&sdk.stderr)
    );
    let listed: Value = serde_json::from_str(said.lines().last().unwrap()).unwrap();
    assert_eq!(listed, serde_json::json!({"listall": ["shared"]}));

    // flyte-run, with the same file: a Pkce login, then the shell in the task.
    let mut child = home
        .0
        .command(BIN)
        .env_remove("FLYTE_ENDPOINT")
        .env("BROWSER", &browser)
        .env("FLYTE_RUN_BIN", BIN)
        .args(["debug", "shared", "--shell", "--poll-interval", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo in-the-task\nexit 0\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("in-the-task"),
        "{stderr}"
    );
    assert!(
        stderr.contains("To log in, open http://127.0.0.1:"),
        "{stderr}"
    );
}
