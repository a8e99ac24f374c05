//! How the client reaches a route: the TCP connection (directly, or through an HTTP proxy's
//! `CONNECT`) and the TLS it trusts. The same settings reach the control plane's API client
//! (Flyte's `admin.caCertFilePath`, `admin.insecureSkipVerify`, `admin.httpProxyURL`), so a route
//! behind the same ingress is reached the same way.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::http::{Method, Request, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{Result, TunnelError};

/// A byte stream a WebSocket runs over: a TCP connection, or one carried through a proxy.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The boxed stream every connection is, whichever way it was opened.
pub type BoxedStream = Box<dyn Stream>;

/// How to reach routes; the default is directly, trusting the system's CAs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// A PEM file of CAs to trust besides the system's.
    pub extra_ca: Option<PathBuf>,
    /// Accept any certificate (Flyte's `admin.insecureSkipVerify`): the connection is encrypted
    /// but its peer is not checked. Signatures are still verified, so the handshake itself is
    /// sound.
    pub skip_verify: bool,
    /// An `http://host:port` proxy to `CONNECT` through. Credentials in it are refused: this
    /// setting travels in ssh's `ProxyCommand`, which other users can read in the process list.
    pub http_proxy: Option<String>,
}

impl Transport {
    /// The arguments of `flyte-run tunnel` that carry these settings (what a Host block's
    /// `ProxyCommand` passes after the URL).
    pub fn tunnel_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ca) = &self.extra_ca {
            args.push("--cacert".to_owned());
            args.push(ca.display().to_string());
        }
        if self.skip_verify {
            args.push("--insecure-skip-verify".to_owned());
        }
        if let Some(proxy) = &self.http_proxy {
            args.push("--proxy".to_owned());
            args.push(proxy.clone());
        }
        args
    }

    /// Refuse settings that cannot work before anything connects.
    pub fn check(&self) -> Result<()> {
        if let Some(proxy) = &self.http_proxy {
            proxy_address(proxy)?;
        }
        Ok(())
    }

    /// The rustls configuration for these settings.
    pub(crate) fn tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        crate::tls::client_config(self.extra_ca.as_deref(), self.skip_verify)
    }

    /// A TCP connection to `host:port`, through the proxy when there is one. A route that does
    /// not answer is `RouteNotServing` (it may be starting); a proxy that refuses or cannot be
    /// reached is `Proxy`.
    pub(crate) async fn open(&self, host: &str, port: u16) -> Result<BoxedStream> {
        let not_serving = |e: std::io::Error| TunnelError::RouteNotServing {
            detail: e.to_string(),
        };
        match &self.http_proxy {
            None => {
                let tcp = TcpStream::connect((host, port))
                    .await
                    .map_err(not_serving)?;
                // Interactive keystrokes go out at once.
                tcp.set_nodelay(true).map_err(not_serving)?;
                Ok(Box::new(tcp))
            }
            Some(proxy) => {
                let (proxy_host, proxy_port) = proxy_address(proxy)?;
                connect_through(&proxy_host, proxy_port, host, port)
                    .await
                    .map_err(|detail| TunnelError::Proxy {
                        proxy: redacted(proxy),
                        detail,
                    })
            }
        }
    }
}

/// The host and port of an `http://` proxy URL; anything else is refused with the reason.
fn proxy_address(proxy: &str) -> Result<(String, u16)> {
    let bad = |reason: &str| TunnelError::BadUrl {
        url: redacted(proxy),
        reason: reason.to_owned(),
    };
    let uri: Uri = proxy
        .parse()
        .map_err(|_| bad("the proxy is not a URL; use http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only http:// proxies are supported")),
        None => return Err(bad("the proxy has no scheme; use http://host:port")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("the proxy has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "a proxy with credentials would show them in ssh's ProxyCommand; use a proxy that needs none, or one on this machine",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, authority.port_u16().unwrap_or(80)))
}

/// A proxy URL as errors show it: everything up to the last `@` of its authority (user and
/// password, which may itself hold `@`) left out, with or without a scheme.
fn redacted(proxy: &str) -> String {
    let (scheme, rest) = match proxy.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), proxy),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}…@{host}{tail}"),
        None => proxy.to_owned(),
    }
}

/// `CONNECT host:port` through the proxy at `proxy_host:proxy_port`; the tunnel it opens.
async fn connect_through(
    proxy_host: &str,
    proxy_port: u16,
    host: &str,
    port: u16,
) -> std::result::Result<BoxedStream, String> {
    let tcp = TcpStream::connect((proxy_host, proxy_port))
        .await
        .map_err(|e| format!("cannot reach it: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    // The connection must be driven (with upgrades) until the proxy has answered and handed it
    // over; it then ends by itself.
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(target.as_str())
        .header(hyper::header::HOST, target.as_str())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer to CONNECT {target}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "refused CONNECT {target}: HTTP {}",
            response.status().as_u16()
        ));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Box::new(hyper_util::rt::TokioIo::new(upgraded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        for (proxy, want) in [
            ("http://proxy:3128", Ok(("proxy".to_owned(), 3128))),
            ("http://127.0.0.1", Ok(("127.0.0.1".to_owned(), 80))),
            ("http://[::1]:8888", Ok(("::1".to_owned(), 8888))),
            ("https://proxy:443", Err("only http://")),
            ("proxy:3128", Err("no scheme")),
            ("http://user:hunter2@proxy:3128", Err("credentials")),
            ("user:hunter2@proxy:3128", Err("no scheme")),
            ("http://u:hunter2@ss@proxy:3128", Err("credentials")),
        ] {
            match (proxy_address(proxy), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{proxy}"),
                (Err(e), Err(reason)) => {
                    let text = e.to_string();
                    assert!(text.contains(reason), "{proxy}: {text}");
                    assert!(!text.contains("hunter2"), "{text}");
                }
                (got, want) => panic!("{proxy}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn tunnel_args_carry_each_setting() {
        let transport = Transport {
            extra_ca: Some(PathBuf::from("/etc/ca.pem")),
            skip_verify: true,
            http_proxy: Some("http://proxy:3128".to_owned()),
        };
        assert_eq!(
            transport.tunnel_args(),
            [
                "--cacert",
                "/etc/ca.pem",
                "--insecure-skip-verify",
                "--proxy",
                "http://proxy:3128"
            ]
        );
        assert!(Transport::default().tunnel_args().is_empty());
    }
}
