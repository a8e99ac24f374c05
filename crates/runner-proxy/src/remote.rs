//! Pure builders for what runs in the runner, and parsers for what comes back. No I/O.

use crate::{Result, RunnerError};

/// `word` quoted for a POSIX shell (shlex): one parse gives it back exactly. A NUL byte cannot
/// be in any shell word, so it is refused.
fn quote(word: &str) -> Result<std::borrow::Cow<'_, str>> {
    shlex::try_quote(word).map_err(|_| RunnerError::Invalid {
        what: "command word",
        reason: format!("{word:?} holds a NUL byte, which no shell command can carry"),
    })
}

/// `kubectl <args>`, each argument quoted for the shell that runs it.
pub fn kubectl_script<S: AsRef<str>>(args: &[S]) -> Result<String> {
    let mut script = "kubectl".to_owned();
    for arg in args {
        script.push(' ');
        script.push_str(&quote(arg.as_ref())?);
    }
    Ok(script)
}

/// The command the management host runs for `script`: `incus exec <vm> -- bash -lc <script>`,
/// quoted once more for the management host's shell (ssh hands it over as one string). A login
/// shell, so the VM's profile (kubectl on PATH, KUBECONFIG) applies.
pub fn in_vm(vm: &str, script: &str) -> Result<String> {
    Ok(format!(
        "incus exec {} -- bash -lc {}",
        quote(vm)?,
        quote(script)?
    ))
}

/// The exit code `timeout` gives a command it stopped.
pub const TIMED_OUT: i32 = 124;

/// [`in_vm`], with the command stopped in the VM itself after `secs` seconds (TERM, then KILL 5 s
/// later): killing the local ssh alone would leave it running there.
pub fn in_vm_for(vm: &str, script: &str, secs: u64) -> Result<String> {
    Ok(format!(
        "incus exec {} -- timeout -k 5 {} bash -lc {}",
        quote(vm)?,
        secs.max(1),
        quote(script)?
    ))
}

/// A URL as it may appear in messages: no user info, no query (either may hold a token).
pub fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() && !rest.contains('/') {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => without_query.to_owned(),
    }
}

/// One HTTP request made by curl inside the runner.
#[derive(Clone, PartialEq, Eq)]
pub struct CurlRequest {
    pub url: String,
    pub method: String,
    /// `(name, value)` pairs; values may be secrets (Authorization) and never reach argv.
    pub headers: Vec<(String, String)>,
    pub data: Option<String>,
    pub timeout_secs: u64,
    /// Accept any TLS certificate (`curl -k`), for cluster-internal services with their own CA.
    pub insecure: bool,
}

impl std::fmt::Debug for CurlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("CurlRequest")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &header_names)
            .field(
                "data",
                &self.data.as_ref().map(|d| format!("<{} bytes>", d.len())),
            )
            .field("timeout_secs", &self.timeout_secs)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl CurlRequest {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            data: None,
            timeout_secs: 10,
            insecure: false,
        }
    }
}

/// What curl answered: the HTTP status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlResponse {
    pub status: u16,
    pub body: String,
}

/// Separates the body from the status curl writes after it (`-w`).
const STATUS_MARKER: &str = "\n__flyte_run_http_status=";

/// The curl command line: everything else (URL, method, headers, body) comes from the config on
/// its stdin (`-K -`), so no secret is in any process's argv, here or in the runner.
pub fn curl_script(request: &CurlRequest) -> String {
    let insecure = if request.insecure { " -k" } else { "" };
    let max_time = request.timeout_secs.max(1);
    // Every word is a constant; the write-out format (a newline, the marker, curl's variable)
    // holds no `'`, so single quotes keep it one word.
    format!("curl -sS -K - -o -{insecure} -w '{STATUS_MARKER}%{{http_code}}' --max-time {max_time}")
}

/// A value in curl's config syntax: double-quoted, with `\\`, `\"`, `\t`, `\n`, `\r` escaped.
fn config_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

fn refuse_breaks(what: &'static str, value: &str) -> Result<()> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(RunnerError::Invalid {
            what,
            reason: "it contains a line break or NUL, which would inject a second header or option"
                .to_owned(),
        });
    }
    Ok(())
}

/// curl's config for `request` (fed on stdin). Line breaks in the URL, method or a header are
/// refused: they would smuggle in another header.
pub fn curl_config(request: &CurlRequest) -> Result<String> {
    refuse_breaks("URL", &request.url)?;
    if request.url.is_empty() {
        return Err(RunnerError::Invalid {
            what: "URL",
            reason: "it is empty".to_owned(),
        });
    }
    if request.method.is_empty() || !request.method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(RunnerError::Invalid {
            what: "HTTP method",
            reason: format!("{:?} is not a method such as GET or POST", request.method),
        });
    }
    let mut config = format!(
        "url = {}\nrequest = {}\n",
        config_string(&request.url),
        config_string(&request.method.to_ascii_uppercase())
    );
    for (name, value) in &request.headers {
        refuse_breaks("header", name)?;
        refuse_breaks("header", value)?;
        if name.is_empty() || name.contains([':', ' ']) {
            return Err(RunnerError::Invalid {
                what: "header",
                reason: format!("{name:?} is not a header name"),
            });
        }
        config.push_str("header = ");
        config.push_str(&config_string(&format!("{name}: {value}")));
        config.push('\n');
    }
    if let Some(data) = &request.data {
        if data.contains('\0') {
            return Err(RunnerError::Invalid {
                what: "request body",
                reason: "it contains NUL, which curl's config cannot carry".to_owned(),
            });
        }
        // data-raw: a body starting with `@` is sent as it is, not read from a file.
        config.push_str("data-raw = ");
        config.push_str(&config_string(data));
        config.push('\n');
    }
    Ok(config)
}

/// Split curl's output into body and status.
pub fn parse_curl_output(stdout: &str) -> Result<CurlResponse> {
    // The output may be a body with a token in it: only its size goes into the error.
    let (body, status) = stdout
        .rsplit_once(STATUS_MARKER)
        .ok_or(RunnerError::CurlOutput(stdout.len()))?;
    let status = status
        .trim()
        .parse::<u16>()
        .map_err(|_| RunnerError::CurlOutput(stdout.len()))?;
    Ok(CurlResponse {
        status,
        body: body.to_owned(),
    })
}

/// The line the port-forward script prints once kubectl forwards.
pub const READY: &str = "READY";
/// How long the port-forward script waits for kubectl's `Forwarding from` line (in 0.1 s steps).
pub const PORT_FORWARD_READY_STEPS: u32 = 150;

/// Start `kubectl port-forward` in the background in the runner, wait (bounded) until it prints
/// `Forwarding from` rather than sleeping a fixed time, print `READY`, then hold the session
/// until its stdin ends and stop kubectl. The forward lives exactly as long as the ssh session:
/// closing it, dropping it or losing the connection all stop kubectl, and no pid is killed
/// later that might by then belong to another process. If kubectl exits first, its output goes
/// to stderr and the script fails.
pub fn port_forward_script(
    namespace: &str,
    pod: &str,
    local_port: u16,
    remote_port: u16,
) -> Result<String> {
    let kubectl = kubectl_script(&[
        "-n",
        namespace,
        "port-forward",
        pod,
        &format!("{local_port}:{remote_port}"),
    ])?;
    Ok(format!(
        "log=$(mktemp /tmp/flyte-run-port-forward.XXXXXX) || exit 1; \
         {kubectl} </dev/null >\"$log\" 2>&1 & pid=$!; \
         i=0; while ! grep -q 'Forwarding from' \"$log\"; do \
         if ! kill -0 $pid 2>/dev/null || [ $i -ge {PORT_FORWARD_READY_STEPS} ]; then \
         kill $pid 2>/dev/null; cat \"$log\" >&2; rm -f \"$log\"; \
         [ $i -ge {PORT_FORWARD_READY_STEPS} ] && echo 'kubectl port-forward printed no \"Forwarding from\" line within 15 s' >&2; \
         exit 1; fi; sleep 0.1; i=$((i+1)); done; \
         echo {READY}; read -r _; kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f \"$log\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_config_escapes_and_refuses_injection() {
        let request = CurlRequest {
            url: "http://svc.ns:8080/a b?q=\"x\"".to_owned(),
            method: "post".to_owned(),
            headers: vec![("Authorization".to_owned(), "Bearer t\\k".to_owned())],
            data: Some("{\"a\": 1}\nline2\t".to_owned()),
            timeout_secs: 5,
            insecure: false,
        };
        assert_eq!(
            curl_config(&request).unwrap(),
            "url = \"http://svc.ns:8080/a b?q=\\\"x\\\"\"\n\
             request = \"POST\"\n\
             header = \"Authorization: Bearer t\\\\k\"\n\
             data-raw = \"{\\\"a\\\": 1}\\nline2\\t\"\n"
        );
        // Debug output names headers but never shows their values or the body.
        let debug = format!("{request:?}");
        assert!(
            debug.contains("Authorization") && !debug.contains("Bearer"),
            "{debug}"
        );
        assert!(!debug.contains("line2"), "{debug}");

        for (case, mutate) in [
            (
                "header value",
                Box::new(|r: &mut CurlRequest| r.headers[0].1.push_str("\r\nX: y"))
                    as Box<dyn Fn(&mut CurlRequest)>,
            ),
            (
                "header name",
                Box::new(|r: &mut CurlRequest| r.headers[0].0 = "A: b".to_owned()),
            ),
            ("url", Box::new(|r: &mut CurlRequest| r.url.push('\n'))),
            ("empty url", Box::new(|r: &mut CurlRequest| r.url.clear())),
            (
                "method",
                Box::new(|r: &mut CurlRequest| r.method = "GET -o /etc/x".to_owned()),
            ),
            (
                "body with NUL",
                Box::new(|r: &mut CurlRequest| r.data = Some("a\0b".to_owned())),
            ),
        ] {
            let mut bad = request.clone();
            mutate(&mut bad);
            let err = curl_config(&bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid "), "{case}: {err}");
            assert!(!err.contains("Bearer"), "{case}: {err}");
        }
    }

    #[test]
    fn curl_output_splits_body_and_status() {
        for (stdout, want) in [
            ("hello\n__flyte_run_http_status=200", Some((200, "hello"))),
            ("\n__flyte_run_http_status=404", Some((404, ""))),
            // A body that itself contains the marker: the last one is curl's.
            (
                "a\n__flyte_run_http_status=1\n__flyte_run_http_status=503",
                Some((503, "a\n__flyte_run_http_status=1")),
            ),
            ("no marker", None),
            ("x\n__flyte_run_http_status=abc", None),
        ] {
            let got = parse_curl_output(stdout).ok();
            assert_eq!(
                got.as_ref().map(|r| (r.status, r.body.as_str())),
                want,
                "{stdout:?}"
            );
        }
    }

    #[test]
    fn scripts_quote_every_argument() {
        assert_eq!(kubectl_script::<&str>(&[]).unwrap(), "kubectl");
        assert_eq!(
            kubectl_script(&[
                "get",
                "pods",
                "-l",
                "app in (a, b)",
                "-o",
                "jsonpath={.items[*].metadata.name}"
            ])
            .unwrap(),
            "kubectl get pods -l 'app in (a, b)' -o 'jsonpath={.items[*].metadata.name}'"
        );
        assert_eq!(
            in_vm("my vm", "echo 'x'").unwrap(),
            r#"incus exec 'my vm' -- bash -lc "echo 'x'""#
        );
        let pf = port_forward_script("ns", "pod/web-0", 8080, 80).unwrap();
        assert!(
            pf.contains("kubectl -n ns port-forward pod/web-0 8080:80 </dev/null"),
            "{pf}"
        );
        assert!(pf.contains("echo READY; read -r _; kill $pid"), "{pf}");
        assert_eq!(
            in_vm_for("vm", "sleep 9", 30).unwrap(),
            "incus exec vm -- timeout -k 5 30 bash -lc 'sleep 9'"
        );
        for (url, want) in [
            ("https://u:tok@h:8443/p?token=x#f", "https://h:8443/p"),
            (
                "http://127.0.0.1:80/hello.txt",
                "http://127.0.0.1:80/hello.txt",
            ),
            ("http://h", "http://h"),
        ] {
            assert_eq!(redact_url(url), want);
        }
        // The command line carries no header value or body: those go in on stdin.
        let request = CurlRequest {
            headers: vec![("Authorization".to_owned(), "Bearer s3cr3t".to_owned())],
            data: Some("body-s3cr3t".to_owned()),
            ..CurlRequest::get("http://h/?token=q-s3cr3t")
        };
        let script = curl_script(&request);
        assert!(!script.contains("s3cr3t"), "{script}");
    }
}
