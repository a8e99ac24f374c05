#![allow(clippy::disallowed_methods)] // Tests write their fixtures directly.
use super::*;

fn places(root: &Path) -> SearchPlaces {
    SearchPlaces {
        cwd: root.join("work/sub"),
        git_root: Some(root.join("work")),
        home: root.join("home"),
        uctl_config: Some(root.join("uctl.yaml")),
        flytectl_config: Some(root.join("flytectl.yaml")),
    }
}

/// Each row: the files that exist (relative to a root), and which one the SDK reads.
#[test]
fn the_first_file_in_the_sdks_order_wins() {
    for (existing, want) in [
        (
            &["home/.flyte/config.yaml"][..],
            Some("home/.flyte/config.yaml"),
        ),
        (
            &["home/.flyte/config.yaml", "home/.union/config.yaml"][..],
            Some("home/.union/config.yaml"),
        ),
        (
            &["home/.union/config.yaml", "flytectl.yaml"][..],
            Some("flytectl.yaml"),
        ),
        (&["flytectl.yaml", "uctl.yaml"][..], Some("uctl.yaml")),
        (
            &["uctl.yaml", "work/.flyte/config.yaml"][..],
            Some("work/.flyte/config.yaml"),
        ),
        (
            &["work/.flyte/config.yaml", "work/sub/.flyte/config.yaml"][..],
            Some("work/sub/.flyte/config.yaml"),
        ),
        (
            &["work/sub/.flyte/config.yaml", "work/sub/config.yaml"][..],
            Some("work/sub/config.yaml"),
        ),
        (&[][..], None),
    ] {
        let root = Path::new("/r");
        let found = find_flyte_config(&places(root), |p| {
            existing.iter().any(|e| root.join(e) == p)
        });
        assert_eq!(
            found.map(|(p, _)| p),
            want.map(|w| root.join(w)),
            "{existing:?}"
        );
    }
}

#[test]
fn standing_in_the_home_directory_its_flyte_file_is_the_users_own() {
    let places = SearchPlaces {
        cwd: PathBuf::from("/home/u"),
        home: PathBuf::from("/home/u"),
        ..SearchPlaces::default()
    };
    let found = find_flyte_config(&places, |p| p == Path::new("/home/u/.flyte/config.yaml"));
    assert_eq!(
        found,
        Some((PathBuf::from("/home/u/.flyte/config.yaml"), Place::Home))
    );
}

#[test]
fn the_git_root_is_the_nearest_ancestor_with_dot_git() {
    let exists = |p: &Path| p == Path::new("/r/work/.git") || p == Path::new("/r/.git");
    assert_eq!(
        git_root(Path::new("/r/work/sub/deeper"), exists),
        Some(PathBuf::from("/r/work"))
    );
    assert_eq!(git_root(Path::new("/elsewhere"), exists), None);
}

const FLYTE_YAML: &str = "\
admin:
  endpoint: dns:///flyte.example.com
  insecure: false
  authType: DeviceFlow
  clientId: flytepropeller
  scopes: [all, offline]
  command: [\"gcloud\", \"auth\", \"print-access-token\"]
  someKeyFlyteHasAndWeDoNot: 3
task:
  project: ml
  domain: development
image:
  builder: remote
";

fn resolve_with(
    yaml: Option<&str>,
    settings: &[(&'static str, &'static str, &str)],
    env: &[(&str, &str)],
    flags: &[(&'static str, &'static str, &str)],
) -> (Result<Resolved>, tempfile::TempDir) {
    resolve_at(yaml, Place::Home, settings, env, flags)
}

fn resolve_at(
    yaml: Option<&str>,
    place: Place,
    settings: &[(&'static str, &'static str, &str)],
    env: &[(&str, &str)],
    flags: &[(&'static str, &'static str, &str)],
) -> (Result<Resolved>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    if let Some(yaml) = yaml {
        std::fs::write(&path, yaml).unwrap();
    }
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let layer = |path: Option<PathBuf>, values: &[(&'static str, &'static str, &str)]| Layer {
        path,
        values: values
            .iter()
            .map(|(k, n, v)| (*k, *n, (*v).to_owned()))
            .collect(),
    };
    let inputs = Inputs {
        flyte_config: yaml.is_some().then_some((path.as_path(), place)),
        settings: layer(Some(PathBuf::from("/h/.flyte/flyte-run.json")), settings),
        env: &lookup,
        flags: layer(None, flags),
    };
    (resolve(&inputs), dir)
}

/// The precedence table: which layer's value wins for the endpoint, and the source named.
#[test]
fn flags_beat_environment_beat_settings_beat_flytes_file() {
    let settings = [(ENDPOINT, "endpoint", "https://from-settings")];
    let env = [("FLYTE_ADMIN_ENDPOINT", "https://from-flyte-env")];
    let ours = [("FLYTE_ENDPOINT", "https://from-our-env")];
    let flags = [(ENDPOINT, "--endpoint", "https://from-flag")];
    for (settings, env, flags, want, source) in [
        (
            &[][..],
            &[][..],
            &[][..],
            "dns:///flyte.example.com",
            "config.yaml: admin.endpoint",
        ),
        (
            &settings[..],
            &[][..],
            &[][..],
            "https://from-settings",
            "/h/.flyte/flyte-run.json: endpoint",
        ),
        (
            &settings[..],
            &env[..],
            &[][..],
            "https://from-flyte-env",
            "$FLYTE_ADMIN_ENDPOINT",
        ),
        (
            &settings[..],
            &[env[0], ours[0]][..],
            &[][..],
            "https://from-our-env",
            "$FLYTE_ENDPOINT",
        ),
        (
            &settings[..],
            &env[..],
            &flags[..],
            "https://from-flag",
            "--endpoint",
        ),
    ] {
        let (resolved, _dir) = resolve_with(Some(FLYTE_YAML), settings, env, flags);
        let endpoint = resolved.unwrap().text(ENDPOINT).unwrap();
        assert_eq!(endpoint.value, want);
        assert!(
            endpoint.source.to_string().ends_with(source),
            "{}",
            endpoint.source
        );
    }
}

#[test]
fn flytes_keys_lists_and_auth_types_are_read() {
    let (resolved, _dir) = resolve_with(Some(FLYTE_YAML), &[], &[], &[]);
    let resolved = resolved.unwrap();
    assert_eq!(
        resolved.auth_type().unwrap().unwrap().value,
        AuthType::DeviceFlow
    );
    assert_eq!(
        resolved.get(SCOPES).unwrap().value,
        Value::List(vec!["all".into(), "offline".into()])
    );
    assert_eq!(
        resolved.get(COMMAND).unwrap().value,
        Value::List(vec![
            "gcloud".into(),
            "auth".into(),
            "print-access-token".into()
        ])
    );
    assert_eq!(resolved.text(PROJECT).unwrap().value, "ml");
    assert!(!resolved.flag(INSECURE).unwrap().unwrap().value);
    assert!(resolved.get(CLIENT_SECRET_LOCATION).is_none());

    // The environment's spellings: the SDK's alias first, a command split into words.
    let (resolved, _dir) = resolve_with(
        Some(FLYTE_YAML),
        &[],
        &[
            ("FLYTE_ADMIN_AUTHTYPE", "Pkce"),
            ("FLYTE_AUTH_TYPE", "externalcommand"),
            ("FLYTE_AUTH_COMMAND", "print-token --audience flyte"),
            ("FLYTE_INSECURE", "1"),
        ],
        &[],
    );
    let resolved = resolved.unwrap();
    let auth = resolved.auth_type().unwrap().unwrap();
    assert_eq!(auth.value, AuthType::ExternalCommand);
    assert_eq!(auth.source, Source::Env("FLYTE_AUTH_TYPE"));
    assert_eq!(
        resolved.get(COMMAND).unwrap().value,
        Value::List(vec![
            "print-token".into(),
            "--audience".into(),
            "flyte".into()
        ])
    );
    assert!(resolved.flag(INSECURE).unwrap().unwrap().value);
}

#[test]
fn bad_input_names_the_file_or_the_variable() {
    let (resolved, _dir) = resolve_with(Some("admin: [unclosed\n"), &[], &[], &[]);
    let message = resolved.unwrap_err().to_string();
    assert!(
        message.contains("config.yaml: not a Flyte config file"),
        "{message}"
    );

    let (resolved, _dir) = resolve_with(
        Some(FLYTE_YAML),
        &[],
        &[("FLYTE_AUTH_TYPE", "Kerberos")],
        &[],
    );
    let message = resolved.unwrap().auth_type().unwrap_err().to_string();
    assert_eq!(
        message,
        "$FLYTE_AUTH_TYPE sets admin.authType to \"Kerberos\", which is not one of Pkce, DeviceFlow, ClientSecret, ExternalCommand, Passthrough"
    );

    let (resolved, _dir) = resolve_with(None, &[], &[("FLYTE_ADMIN_INSECURE", "sometimes")], &[]);
    let message = resolved.unwrap().flag(INSECURE).unwrap_err().to_string();
    assert!(
        message.starts_with("$FLYTE_ADMIN_INSECURE sets admin.insecure"),
        "{message}"
    );
}

#[test]
fn show_lists_every_setting_with_its_source_and_hides_the_api_key() {
    let (resolved, dir) = resolve_with(
        Some(FLYTE_YAML),
        &[],
        &[
            ("FLYTE_API_KEY", "c2VjcmV0LWtleS12YWx1ZQ=="),
            ("FLYTE_TASK_DOMAIN", "staging"),
        ],
        &[(INSECURE, "--insecure", "true")],
    );
    let shown = resolved
        .unwrap()
        .render()
        .replace(&dir.path().display().to_string(), "<dir>");
    assert!(!shown.contains("c2VjcmV0"), "{shown}");
    insta::assert_snapshot!(shown);
}

#[test]
fn where_a_file_was_found_decides_whether_it_may_run_commands_or_read_secrets() {
    for (place, allowed) in [
        (Place::Home, true),
        (Place::Named, true),
        (Place::WorkingDirectory, false),
        (Place::GitRoot, false),
    ] {
        for key_yaml in [
            "admin:\n  endpoint: https://x\n  command: [sh, -c, id]\n",
            "admin:\n  endpoint: https://x\n  clientSecretLocation: /home/u/.ssh/id_ed25519\n",
            "admin:\n  endpoint: https://x\n  clientSecretEnvVar: AWS_SECRET_ACCESS_KEY\n",
            "admin:\n  endpoint: https://x\n  proxyCommand: [cat, /etc/shadow]\n",
        ] {
            let (resolved, _dir) = resolve_at(Some(key_yaml), place, &[], &[], &[]);
            assert_eq!(resolved.is_ok(), allowed, "{place:?} {key_yaml}");
            if let Err(e) = resolved {
                let message = e.to_string();
                assert!(
                    message.contains("runs a command or reads a secret"),
                    "{message}"
                );
            }
        }
        // Where to connect is fine from anywhere.
        let (resolved, _dir) = resolve_at(
            Some(FLYTE_YAML.split("  command").next().unwrap()),
            place,
            &[],
            &[],
            &[],
        );
        assert!(resolved.is_ok(), "{place:?}");
    }
}

#[test]
fn empty_variables_count_as_unset_and_lists_split_as_the_sdk_splits_them() {
    let (resolved, _dir) = resolve_with(
        Some(FLYTE_YAML),
        &[],
        &[
            ("FLYTE_ENDPOINT", " "),
            ("FLYTE_AUTH_COMMAND", "print-token --note 'a b, c'"),
            ("FLYTE_ADMIN_SCOPES", "read,write offline"),
        ],
        &[],
    );
    let resolved = resolved.unwrap();
    assert_eq!(
        resolved.text(ENDPOINT).unwrap().value,
        "dns:///flyte.example.com"
    );
    assert_eq!(
        resolved.get(COMMAND).unwrap().value,
        Value::List(vec!["print-token".into(), "--note".into(), "a b, c".into()])
    );
    assert_eq!(
        resolved.get(SCOPES).unwrap().value,
        Value::List(vec!["read".into(), "write".into(), "offline".into()])
    );
    let (resolved, _dir) = resolve_with(
        None,
        &[],
        &[("FLYTE_AUTH_COMMAND", r#"["sh", "-c", "a, b"]"#)],
        &[],
    );
    assert_eq!(
        resolved.unwrap().get(COMMAND).unwrap().value,
        Value::List(vec!["sh".into(), "-c".into(), "a, b".into()])
    );
}

#[test]
fn show_hides_command_arguments_and_proxy_credentials() {
    let (resolved, _dir) = resolve_with(
        None,
        &[],
        &[
            ("FLYTE_AUTH_COMMAND", "print-token --password hunter2"),
            ("FLYTE_ADMIN_HTTPPROXYURL", "http://user:pw@proxy:3128/x"),
        ],
        &[],
    );
    let shown = resolved.unwrap().render();
    assert!(
        !shown.contains("hunter2") && !shown.contains("user:pw"),
        "{shown}"
    );
    assert!(
        shown.contains("print-token <2 argument(s) hidden>"),
        "{shown}"
    );
    assert!(
        shown.contains("http://<credentials hidden>@proxy:3128/x"),
        "{shown}"
    );
}

/// What Flyte's SDK derives an org from (`org_from_endpoint`), endpoint by endpoint.
#[test]
fn the_org_is_derived_from_the_endpoint_as_flytes_sdk_does() {
    for (endpoint, want) in [
        ("dns:///acme.cloud.example.com", Some("acme")),
        ("https://acme.cloud.example.com/console", Some("acme")),
        ("http://acme.cloud.example.com:8080", Some("acme")),
        ("dns:///127.0.0.1:8089", Some("127")),
        ("dns:///flyte.example:443", None),
        ("https://localhost:30080", None),
        ("localhost:30080", None),
        ("example.com", None),
        ("a.b.c", Some("a")),
    ] {
        assert_eq!(
            crate::org_from_endpoint(endpoint).as_deref(),
            want,
            "{endpoint}"
        );
    }
}
