//! Every environment variable flyte-run reads, in one place, with what it means.

/// The home directory; `~/.flyte` and `~/.ssh` are found under it (falls back to the passwd
/// entry when unset).
pub(crate) const HOME: &str = "HOME";
/// A `tracing` filter for log lines on stderr, e.g. `info` or `flyte_keys=debug`. Default `warn`.
pub(crate) const FLYTE_RUN_LOG: &str = "FLYTE_RUN_LOG";
/// The control plane (`https://host`, `dns:///host:port`, `http://127.0.0.1:port`) when
/// `--endpoint` is not given.
pub(crate) const FLYTE_ENDPOINT: &str = flyte_api::ENV_ENDPOINT;
/// `1`/`true` lets `--endpoint http://...` name a host other than this machine (tokens then
/// travel unencrypted). Loopback endpoints never need it.
pub(crate) const FLYTE_INSECURE: &str = "FLYTE_INSECURE";
/// The endpoint authority (`host:port`) to which a stored API key made for another endpoint may
/// be sent anyway (a renamed or proxied deployment). Only that endpoint; unset by default.
pub(crate) const FLYTE_RUN_ALLOW_KEY_ENDPOINT: &str = "FLYTE_RUN_ALLOW_KEY_ENDPOINT";
