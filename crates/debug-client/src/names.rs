//! The pure parts of a debug session: names, URLs, the launch environment, and where a token may
//! go. No I/O.

use flyte_api::Endpoint;
use flyte_api::idl::flyteidl2::common::RunIdentifier;
use flyte_debug_server::settings;

use crate::{DebugClientError, Result};

pub use flyte_api::request::{DEFAULT_DOMAIN, DEFAULT_PROJECT, ROOT_ACTION as DEFAULT_ACTION};
/// The ssh Host alias written when none is given, as Flyte names it.
pub const DEFAULT_ALIAS: &str = "flyte-debug";

/// The name `flyte debug RUN` relaunches RUN under, exactly as Flyte derives it: lower-case;
/// runs of characters other than `[a-z0-9-]` become `-`; `-` trimmed at both ends; a leading `u`
/// dropped (names starting with `u` are reserved); cut to 59 characters; `-dbg` appended.
pub fn debug_run_name(run: &str) -> Result<String> {
    let lower = run.to_lowercase();
    let mut dashed = String::with_capacity(lower.len());
    let mut in_run = false;
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            dashed.push(c);
            in_run = false;
        } else if !in_run {
            // A whole run of other characters becomes one '-' (a '-' next to it stays).
            dashed.push('-');
            in_run = true;
        }
    }
    let trimmed = dashed.trim_matches('-');
    let base = trimmed.strip_prefix('u').unwrap_or(trimmed);
    let base: String = base.chars().take(59).collect();
    if base.is_empty() {
        return Err(DebugClientError::BadRunName {
            run: run.to_owned(),
        });
    }
    Ok(format!("{base}-dbg"))
}

/// Flyte's limit on a run name's length (a DNS label: the names become Kubernetes objects).
pub const MAX_RUN_NAME: usize = 63;

/// How many names [`run_name_candidates`] offers: a debug run ended this often is a sign to pick
/// another base name, not to go on counting.
pub const MAX_NAME_CANDIDATES: usize = 50;

/// The names a debug run may take, in the order the reuse policy tries them (see
/// `runs::debug_run`): `name`, then `name-2` … `name-50`, the base cut (and any `-` it then ends
/// with dropped) so that each fits [`MAX_RUN_NAME`].
pub fn run_name_candidates(name: &str) -> Vec<String> {
    let mut names = vec![name.to_owned()];
    for n in 2..=MAX_NAME_CANDIDATES {
        let suffix = format!("-{n}");
        let room = MAX_RUN_NAME.saturating_sub(suffix.len());
        let base: String = name.chars().take(room).collect();
        names.push(format!("{}{suffix}", base.trim_end_matches('-')));
    }
    names
}

/// The WebSocket URL of a route `uri`: absolute as it is, relative joined to the endpoint's host
/// over https; then https -> wss, http -> ws.
pub fn route_url(uri: &str, endpoint: &Endpoint) -> String {
    let absolute = if uri.contains("://") {
        uri.to_owned()
    } else {
        let host = endpoint.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("https://{host}/{}", uri.trim_start_matches('/'))
    };
    if let Some(rest) = absolute.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = absolute.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        absolute
    }
}

/// The `HostKeyAlias` of a debug action: one name per org, project, domain, run and action. A
/// new debug pod has a new host key, and the same run name in two projects is two pods. Names
/// hold no '.', so the dotted join is injective; the org (empty for most deployments) is added
/// only when set, so aliases pinned before orgs were read stay the same.
pub fn host_key_alias(id: &RunIdentifier, action: &str) -> String {
    let org = if id.org.is_empty() {
        String::new()
    } else {
        format!(".{}", id.org)
    };
    format!(
        "{}.{action}.{}.{}{org}.flyte-debug",
        id.name, id.domain, id.project
    )
}

/// The environment that turns SSH debug on for a run: `_F_E_SSH`, `_F_SSH_PK` (the client's
/// public key), `_F_E_VS`, then `extra` on top.
pub fn launch_env(
    public_key: &str,
    extra: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (settings::ENV_ENABLE.to_owned(), "1".to_owned()),
        (
            settings::ENV_PUBLIC_KEY.to_owned(),
            public_key.trim().to_owned(),
        ),
        (settings::ENV_VSCODE.to_owned(), "True".to_owned()),
    ];
    for (key, value) in extra {
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => env.push((key, value)),
        }
    }
    env
}

/// Whether the control plane's token (for `endpoint`) may go to the route at `url` that a
/// caller named (a route the API published is trusted as it is): over TLS to the endpoint's own
/// host, or to a loopback host when the endpoint is on loopback too.
pub fn token_may_go_to(url: &str, endpoint: &Endpoint) -> Result<()> {
    let url = route_url(url, endpoint);
    let refused = || DebugClientError::TokenNotForRoute {
        url: url.clone(),
        endpoint_host: endpoint.host().to_owned(),
    };
    let route = ["ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| Endpoint::parse(&format!("http://{authority}"), true).ok())
        .ok_or_else(refused)?;
    let same_host = route.host().eq_ignore_ascii_case(endpoint.host());
    let allowed =
        (url.starts_with("wss://") && same_host) || (route.is_loopback() && endpoint.is_loopback());
    if allowed { Ok(()) } else { Err(refused()) }
}

/// Whether what travels to `url` is private: `wss://`/`https://`, or a loopback host. A host key
/// is taken for pinning only from such a route: over plain `ws://` to another host, whoever can
/// answer for the route could answer for the key too.
pub fn route_is_private(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if matches!(scheme, "wss" | "https") {
        return true;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    Endpoint::parse(&format!("http://{authority}"), true).is_ok_and(|e| e.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_count_up_and_fit_flytes_limit() {
        let long = "a".repeat(63);
        let ends_in_dash = format!("{}-b", "a".repeat(60));
        for (name, index, want) in [
            ("train-dbg", 0, "train-dbg".to_owned()),
            ("train-dbg", 1, "train-dbg-2".to_owned()),
            ("train-dbg", 49, "train-dbg-50".to_owned()),
            (long.as_str(), 1, format!("{}-2", "a".repeat(61))),
            (long.as_str(), 49, format!("{}-50", "a".repeat(60))),
            // Cut right after a '-': no "--" in the name.
            (ends_in_dash.as_str(), 1, format!("{}-2", "a".repeat(60))),
        ] {
            let names = run_name_candidates(name);
            assert_eq!(names.len(), MAX_NAME_CANDIDATES);
            assert_eq!(names[index], want, "{name} #{index}");
            assert!(
                names.iter().skip(1).all(|n| n.len() <= MAX_RUN_NAME),
                "{name}"
            );
        }
    }

    #[test]
    fn host_keys_are_fetched_only_over_tls_or_loopback() {
        for (url, private) in [
            ("wss://flyte.example.com/v1/debug/r", true),
            ("https://flyte.example.com/x", true),
            ("ws://127.0.0.1:9/v1/debug/p/d/r/a0", true),
            ("ws://[::1]:9/x", true),
            ("ws://localhost/x", true),
            ("ws://flyte.example.com/x", false),
            ("ws://10.0.0.7:8080/x", false),
            ("http://[2001:db8::1]:80/x", false),
            ("no scheme", false),
        ] {
            assert_eq!(route_is_private(url), private, "{url}");
        }
    }

    /// Issue 13, defect 12: the same run name in two projects shared one `HostKeyAlias` and so
    /// one pinned key; the second connection failed "Host key verification failed".
    #[test]
    fn host_key_aliases_differ_per_project_and_domain() {
        let id = |org: &str, project: &str, domain: &str| RunIdentifier {
            org: org.to_owned(),
            project: project.to_owned(),
            domain: domain.to_owned(),
            name: "train".to_owned(),
            ..Default::default()
        };
        let aliases = [
            host_key_alias(&id("", "p1", "development"), "a0"),
            host_key_alias(&id("", "p2", "development"), "a0"),
            host_key_alias(&id("", "p1", "production"), "a0"),
            host_key_alias(&id("", "p1", "development"), "a1"),
            host_key_alias(&id("acme", "p1", "development"), "a0"),
        ];
        assert_eq!(aliases[0], "train.a0.development.p1.flyte-debug");
        assert_eq!(aliases[4], "train.a0.development.p1.acme.flyte-debug");
        let distinct: std::collections::BTreeSet<_> = aliases.iter().collect();
        assert_eq!(distinct.len(), aliases.len());
    }

    #[test]
    fn debug_run_names_are_derived_as_flyte_derives_them() {
        let long = "a".repeat(80);
        let cut = format!("{}-dbg", "a".repeat(59));
        for (run, want) in [
            ("train", "train-dbg"),
            ("Train_Model v2", "train-model-v2-dbg"),
            ("my__run!!x", "my-run-x-dbg"),
            ("--edge--", "edge-dbg"),
            ("upload", "pload-dbg"),
            ("Upload", "pload-dbg"),
            ("u-x", "-x-dbg"),
            ("a-b", "a-b-dbg"),
            ("a-_b", "a--b-dbg"),
            ("abc123", "abc123-dbg"),
            ("été", "t-dbg"),
            (long.as_str(), cut.as_str()),
        ] {
            assert_eq!(debug_run_name(run).ok().as_deref(), Some(want), "{run:?}");
        }
        for run in ["", "u", "___", "-"] {
            let err = debug_run_name(run).unwrap_err().to_string();
            assert!(
                err.contains("cannot derive a debug run name"),
                "{run:?}: {err}"
            );
        }
    }

    #[test]
    fn a_callers_route_url_gets_the_token_only_on_the_endpoints_host() {
        let cluster = Endpoint::parse("dns:///flyte.example.com", false).unwrap();
        let sandbox = Endpoint::parse("http://127.0.0.1:30080", true).unwrap();
        for (url, endpoint, allowed) in [
            ("https://flyte.example.com/v1/debug/x", &cluster, true),
            ("wss://FLYTE.example.com:8443/v1/debug/x", &cluster, true),
            ("/v1/debug/x", &cluster, true),
            ("http://flyte.example.com/v1/debug/x", &cluster, false),
            ("https://evil.example.net/v1/debug/x", &cluster, false),
            ("https://flyte.example.com.evil.net/x", &cluster, false),
            ("http://127.0.0.1:1234/v1/debug/x", &cluster, false),
            ("http://127.0.0.1:41000/v1/debug/x", &sandbox, true),
            ("ws://localhost:41000/v1/debug/x", &sandbox, true),
            ("http://10.0.0.5:41000/v1/debug/x", &sandbox, false),
            ("ftp://127.0.0.1/x", &sandbox, false),
        ] {
            let result = token_may_go_to(url, endpoint);
            assert_eq!(result.is_ok(), allowed, "{url}: {result:?}");
            if let Err(message) = result {
                assert!(message.to_string().contains(endpoint.host()), "{message}");
            }
        }
    }

    #[test]
    fn route_urls_become_websocket_urls() {
        let endpoint = Endpoint::parse("dns:///flyte.example.com:443", false).unwrap();
        for (uri, want) in [
            ("https://h.example/x/y", "wss://h.example/x/y"),
            (
                "http://127.0.0.1:9/v1/debug/p/d/r/a0",
                "ws://127.0.0.1:9/v1/debug/p/d/r/a0",
            ),
            ("wss://h/x", "wss://h/x"),
            ("ws://h/x", "ws://h/x"),
            ("/v1/debug/r", "wss://flyte.example.com/v1/debug/r"),
            ("v1/debug/r", "wss://flyte.example.com/v1/debug/r"),
        ] {
            assert_eq!(route_url(uri, &endpoint), want, "{uri}");
        }
        let v6 = Endpoint::parse("https://[::1]:8443", false).unwrap();
        assert_eq!(route_url("/r", &v6), "wss://[::1]/r");
    }

    #[test]
    fn launch_env_sets_the_three_variables_then_extra() {
        let env = launch_env(
            "ssh-ed25519 AAAA k\n",
            [
                ("_F_SSH_USER".to_owned(), "dev".to_owned()),
                ("_F_E_VS".to_owned(), "False".to_owned()),
            ],
        );
        let want = [
            ("_F_E_SSH", "1"),
            ("_F_SSH_PK", "ssh-ed25519 AAAA k"),
            ("_F_E_VS", "False"),
            ("_F_SSH_USER", "dev"),
        ];
        assert_eq!(env.len(), want.len());
        for ((k, v), (wk, wv)) in env.iter().zip(want) {
            assert_eq!((k.as_str(), v.as_str()), (wk, wv));
        }
    }
}
