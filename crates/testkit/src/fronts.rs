//! What stands in front of a service in a real deployment: a TLS-terminating ingress with its
//! own CA, and an HTTP proxy (Debian's tinyproxy, a real one).
// Test support that panics with the failing call in its message; each step is one setup call.
#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// TLS on 127.0.0.1 for `localhost` and `127.0.0.1`, signed by a CA made for this front (its
/// certificate in [`TlsFront::ca_file`]); each connection is forwarded, decrypted, to `target`.
/// Stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    ca_file: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    /// Start it, writing the CA certificate to `dir/front-ca.pem`.
    pub fn start(target: SocketAddr, dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test ingress CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca_file = dir.join("front-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            _runtime: runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM certificate of the CA that signed the front's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

/// Debian's tinyproxy on 127.0.0.1 (installed by `cargo xtask ci`), its log collected. Stopped
/// by its pid when dropped, or by [`HttpProxy::stop`], which returns its whole log.
#[derive(Debug)]
pub struct HttpProxy {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HttpProxy {
    /// Start it with its configuration in `dir`; returns once it accepts connections.
    pub fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!("Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nAllow 127.0.0.1\n"),
        )
        .unwrap();
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("tinyproxy cannot start ({e}); `cargo xtask ci` installs it")
            });
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut ready = false;
        for line in lines.by_ref().map_while(Result::ok) {
            let accepting = line.contains("Accepting connections");
            log.lock().unwrap().push(line);
            if accepting {
                ready = true;
                break;
            }
        }
        let collected = Arc::clone(&log);
        // Read the rest of its log until it exits.
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let proxy = Self {
            child,
            port,
            log,
            reader: Some(reader),
        };
        assert!(ready, "tinyproxy did not start: {}", proxy.log());
        proxy
    }

    /// Stop it and return its whole log (read to its end, so nothing it wrote is missed).
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
