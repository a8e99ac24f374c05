//! Every environment variable flyte-run reads, in one place, with what it means; and the only
//! functions that read the process environment ([`get`], [`get_os`]: clippy's
//! `disallowed-methods` refuses `std::env::var*` anywhere else).
//!
//! Besides the constants below, values are read through [`get`] for: the debug server's contract
//! (`flyte_debug_server::settings`: `_F_E_SSH`, `_F_SSH_PK`, `_F_SSH_USER`, `_F_E_VS`,
//! `SSH_SERVER_MAX_UPTIME_SECONDS`), the runner's (`flyte_runner_proxy`: `DAP_RUNNER_SSH_HOST`,
//! `DAP_RUNNER_SSH_KEY`, `DAP_RUNNER_VM`), and a script's `env(name)`, which reads the variable
//! the playbook names.

use std::ffi::OsString;

/// The value of `name`, when it is set and UTF-8.
#[allow(clippy::disallowed_methods)] // The one place flyte-run reads the environment.
pub(crate) fn get(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The value of `name`, when it is set, whatever its bytes.
#[allow(clippy::disallowed_methods)] // The one place flyte-run reads the environment.
pub(crate) fn get_os(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The home directory; `~/.flyte` and `~/.ssh` are found under it (falls back to the passwd
/// entry when unset).
pub(crate) const HOME: &str = "HOME";
/// A `tracing` filter for log lines on stderr, e.g. `info` or `flyte_keys=debug`. Default `warn`.
pub(crate) const FLYTE_RUN_LOG: &str = "FLYTE_RUN_LOG";
/// The control plane (`https://host`, `dns:///host:port`, `http://127.0.0.1:port`) when
/// `--endpoint` is not given.
pub(crate) const FLYTE_ENDPOINT: &str = flyte_api::ENV_ENDPOINT;
/// `1`/`true`: plain http, as Flyte's `admin.insecure` means (`dns:///host` becomes
/// `http://host`), to any host, and, unlike Flyte's own setting, with credentials (they then
/// travel unencrypted). Loopback endpoints never need it.
pub(crate) const FLYTE_INSECURE: &str = "FLYTE_INSECURE";
/// The endpoint authority (`host:port`) to which a stored API key made for another endpoint may
/// be sent anyway (a renamed or proxied deployment). Only that endpoint; unset by default.
pub(crate) const FLYTE_RUN_ALLOW_KEY_ENDPOINT: &str = flyte_debug_client::ENV_ALLOW_KEY_ENDPOINT;
/// The browser a `Pkce` login opens its URL with (the program, given the URL as its argument),
/// as Python's `webbrowser` and many tools read it. Unset: the URL is only printed.
pub(crate) const BROWSER: &str = "BROWSER";
/// Set inside a Kubernetes pod: `flyte-run debug-server` then listens on every address (the
/// pod's own network), else on loopback.
pub(crate) const KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
/// The kubeconfig file(s) `flyte-run operator` reads (kube's resolution: else
/// `~/.kube/config`, else the pod's service account).
pub(crate) const KUBECONFIG: &str = "KUBECONFIG";
/// The pod's name (set from the downward API in a Deployment): `flyte-run operator
/// --leader-elect` competes for the Lease under it. Unset: the host name and process id.
pub(crate) const POD_NAME: &str = "POD_NAME";
