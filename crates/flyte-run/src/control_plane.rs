//! Which control plane flyte-run talks to (commands and script modules alike), and with what
//! credentials.

use flyte_api::Endpoint;
use flyte_debug_client::{ControlPlane, PlaneOptions};

use crate::context::AppContext;

/// What to do when no endpoint is configured and no sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenNone {
    /// Say how to configure one.
    Fail,
    /// Start the local sandbox in the background and use it.
    StartSandbox,
}

/// The control plane: `--endpoint`, else `FLYTE_ENDPOINT`/`FLYTE_ADMIN_ENDPOINT`, else
/// `~/.flyte/flyte-run.json`, else Flyte's config file (see `config::resolve`), else the sandbox
/// running on this machine (started first with `WhenNone::StartSandbox`).
pub(crate) fn endpoint(host: &AppContext, when_none: WhenNone) -> Result<Endpoint, String> {
    use crate::config::EndpointSource;
    let source = host.endpoint_source()?;
    let insecure = matches!(source, EndpointSource::Configured { insecure: true, .. });
    let raw = match source {
        EndpointSource::Configured { endpoint, .. } | EndpointSource::Sandbox(Some(endpoint)) => {
            endpoint
        }
        EndpointSource::Sandbox(None) => match when_none {
            WhenNone::Fail => {
                return Err(format!(
                    "no control plane endpoint: pass --endpoint URL, set {}, run `flyte-run config init --endpoint URL`, or start the local sandbox with `flyte-run sandbox start`",
                    crate::env_vars::FLYTE_ENDPOINT
                ));
            }
            WhenNone::StartSandbox => {
                let dir = host.layout().sandbox();
                let (pid, endpoint, fresh) =
                    crate::sandbox::start(&dir, &crate::sandbox::ServeArgs::default())
                        .map_err(|e| format!("cannot start the local sandbox: {e:#}"))?;
                if fresh {
                    eprintln!(
                        "started the local sandbox at {endpoint} (pid {pid}); stop it with `flyte-run sandbox stop`"
                    );
                }
                endpoint
            }
        },
    };
    Endpoint::parse(&raw, insecure).map_err(|e| {
        format!(
            "{e} (set {}=1, or insecure: true beside the endpoint in the file that names it, to allow plain http to this host)",
            crate::env_vars::FLYTE_INSECURE
        )
    })
}

/// The control plane at `endpoint`, with a client authenticated by the credential Flyte's
/// configuration names (see [`plane_options`]), else the best one at hand (the local
/// sandbox's, else a stored API key made for this endpoint or the one
/// `FLYTE_RUN_ALLOW_KEY_ENDPOINT` names).
pub(crate) fn plane(host: &AppContext, endpoint: Endpoint) -> Result<ControlPlane, String> {
    let options = plane_options(host, &endpoint)?;
    host.block_on(ControlPlane::open(host.layout(), endpoint, options))
        .map_err(|e| e.to_string())
}

/// [`endpoint`], then [`plane`].
pub(crate) fn connect(host: &AppContext, when_none: WhenNone) -> Result<ControlPlane, String> {
    plane(host, endpoint(host, when_none)?)
}

/// A person's login: what to do goes to stderr (stdout is the script's); a browser login's URL
/// is also opened with `$BROWSER` when that is set.
fn show_login(prompt: &flyte_auth::LoginPrompt<'_>) {
    eprintln!("{}", prompt.message);
    let (Some(url), Some(browser)) = (
        prompt.open_url,
        crate::env_vars::get_os(crate::env_vars::BROWSER),
    ) else {
        return;
    };
    // The person's browser, given the URL, as `webbrowser` runs it; reaped in the background
    // so the login can serve its redirect meanwhile.
    #[allow(clippy::disallowed_methods)]
    let started = std::process::Command::new(&browser)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .spawn();
    match started {
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!(
            "cannot start the browser {} ({e}); open the URL above yourself",
            std::path::Path::new(&browser).display()
        ),
    }
}

/// [`flyte_debug_client::plane_options`] for `endpoint` from the configuration in effect, with
/// flyte-run's own opt-in to credentials over plain http (`FLYTE_INSECURE`, flyte-run.json's
/// `insecure`) and `FLYTE_RUN_ALLOW_KEY_ENDPOINT`.
pub(crate) fn plane_options(
    host: &AppContext,
    endpoint: &Endpoint,
) -> Result<PlaneOptions, String> {
    let resolved = host.config()?;
    let credentials_over_http = matches!(
        host.endpoint_source()?,
        crate::config::EndpointSource::Configured {
            credentials_over_http: true,
            ..
        }
    );
    let mut options = flyte_debug_client::plane_options(
        resolved,
        endpoint,
        credentials_over_http,
        &crate::env_vars::get,
    )
    .map_err(|e| e.to_string())?;
    options.allow_key_endpoint =
        crate::env_vars::get(crate::env_vars::FLYTE_RUN_ALLOW_KEY_ENDPOINT);
    if options.skip_tls_verify {
        eprintln!(
            "warning: admin.insecureSkipVerify: the certificate of {} is not checked, so anyone \
             between here and there can read the credential; use admin.caCertFilePath instead",
            endpoint.authority()
        );
    }
    if let Some(flyte_debug_client::Credential::Login { prompt, .. }) = &mut options.credential {
        *prompt = Some(std::sync::Arc::new(show_login));
    }
    Ok(options)
}
