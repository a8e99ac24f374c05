//! Every environment variable flyte-run reads, in one place ([`ALL`], from which
//! `docs/cli/environment.md` is generated), with what it means; and the only
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

/// Declares each variable as a constant and lists them all, with their documentation, in
/// [`ALL`] (what the generated reference, docs/cli/environment.md, is written from).
macro_rules! variables {
    ($( $(#[doc = $doc:literal])+ $name:ident = $value:expr; )+) => {
        $( $(#[doc = $doc])+ pub(crate) const $name: &str = $value; )+
        /// Every variable above: (name, what it does).
        pub(crate) const ALL: &[(&str, &str)] = &[ $( ($value, concat!($($doc, "\n"),+)) ),+ ];
    };
}

variables! {
    /// The home directory; `~/.flyte` and `~/.ssh` are found under it (falls back to the passwd
    /// entry when unset).
    HOME = "HOME";
    /// A `tracing` filter for log lines on stderr, e.g. `info` or `flyte_keys=debug`. Default `warn`.
    FLYTE_RUN_LOG = "FLYTE_RUN_LOG";
    /// The control plane (`https://host`, `dns:///host:port`, `http://127.0.0.1:port`) when
    /// `--endpoint` is not given.
    FLYTE_ENDPOINT = flyte_api::ENV_ENDPOINT;
    /// `1`/`true`: plain http, as Flyte's `admin.insecure` means (`dns:///host` becomes
    /// `http://host`), to any host, and, unlike Flyte's own setting, with credentials (they then
    /// travel unencrypted). Loopback endpoints never need it.
    FLYTE_INSECURE = "FLYTE_INSECURE";
    /// The endpoint authority (`host:port`) to which a stored API key made for another endpoint may
    /// be sent anyway (a renamed or proxied deployment). Only that endpoint; unset by default.
    FLYTE_RUN_ALLOW_KEY_ENDPOINT = flyte_debug_client::ENV_ALLOW_KEY_ENDPOINT;
    /// The browser a `Pkce` login opens its URL with (the program, given the URL as its argument),
    /// as Python's `webbrowser` and many tools read it. Unset: the URL is only printed.
    BROWSER = "BROWSER";
    /// Set inside a Kubernetes pod: `flyte-run debug-server` then listens on every address (the
    /// pod's own network), else on loopback.
    KUBERNETES_SERVICE_HOST = "KUBERNETES_SERVICE_HOST";
    /// The kubeconfig file(s) `flyte-run operator` reads (kube's resolution: else
    /// `~/.kube/config`, else the pod's service account).
    KUBECONFIG = "KUBECONFIG";
    /// The pod's name (set from the downward API in a Deployment): `flyte-run operator
    /// --leader-elect` competes for the Lease under it. Unset: the host name and process id.
    POD_NAME = "POD_NAME";
}
