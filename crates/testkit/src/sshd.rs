use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ports::{PortReservation, reserve_port};

/// The host name the client config gives this server (also its `HostKeyAlias`).
const ALIAS: &str = "flyte-test-sshd";
/// How long sshd may take to print its listening line. A bound, not a synchronisation: the wait
/// ends as soon as the line arrives.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts when another program grabbed the reserved port between the check and sshd's bind.
const BIND_ATTEMPTS: usize = 5;

/// A running OpenSSH server on 127.0.0.1. Dropping it kills the process (by its pid) and removes
/// its directory.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    port: PortReservation,
    dir: tempfile::TempDir,
    host_public_key: String,
    client_public_key: String,
    log: SharedLog,
}

/// Options for [`Sshd`].
#[derive(Debug, Default)]
pub struct SshdBuilder {
    host_key: Option<PathBuf>,
    authorized_keys: Vec<String>,
    extra_config: Vec<String>,
}

/// Run `ssh-keygen` to make an unencrypted ed25519 key at `path` (and `path.pub`).
pub fn ssh_keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SshdBuilder {
    /// Also accept this public key line (the server always accepts its own client key too).
    #[must_use]
    pub fn authorize(mut self, public_key_line: &str) -> Self {
        self.authorized_keys.push(public_key_line.trim().to_owned());
        self
    }

    /// Serve with this host key (an OpenSSH private key file) instead of a fresh one.
    #[must_use]
    pub fn host_key(mut self, path: &Path) -> Self {
        self.host_key = Some(path.to_owned());
        self
    }

    /// Append a line to `sshd_config`.
    #[must_use]
    pub fn config(mut self, line: &str) -> Self {
        self.extra_config.push(line.to_owned());
        self
    }

    pub fn start(self) -> Sshd {
        let sshd = find_sshd();
        if crate::is_root() {
            // sshd's privilege separation needs this empty directory when started as root.
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd can be created as root");
        }
        let dir = tempfile::Builder::new()
            .prefix("flyte-sshd-")
            .tempdir()
            .expect("a temporary directory for sshd");
        let host_key = dir.path().join("host_key");
        match &self.host_key {
            Some(given) => {
                std::fs::copy(given, &host_key).expect("copy the given host key");
                let public = Command::new("ssh-keygen")
                    .arg("-y")
                    .arg("-f")
                    .arg(&host_key)
                    .output()
                    .expect("ssh-keygen -y runs");
                assert!(
                    public.status.success(),
                    "the given host key is not usable by OpenSSH"
                );
                std::fs::write(host_key.with_extension("pub"), public.stdout)
                    .expect("write host_key.pub");
            }
            None => ssh_keygen(&host_key, "flyte-test-host"),
        }
        let client_key = dir.path().join("client_key");
        ssh_keygen(&client_key, "flyte-test-client");
        let host_public_key = read_trimmed(&host_key.with_extension("pub"));
        let client_public_key = read_trimmed(&client_key.with_extension("pub"));

        let mut authorized = format!("{client_public_key}\n");
        for key in &self.authorized_keys {
            authorized.push_str(key);
            authorized.push('\n');
        }
        std::fs::write(dir.path().join("authorized_keys"), authorized)
            .expect("write authorized_keys");
        // The client pins the host key under the alias; a changed key would fail the login.
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("{ALIAS} {host_public_key}\n"),
        )
        .expect("write known_hosts");

        let mut last_failure = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = reserve_port();
            write_configs(dir.path(), port.port(), &self.extra_config);
            match spawn_until_listening(&sshd, dir.path()) {
                Ok((child, log)) => {
                    return Sshd {
                        child,
                        port,
                        dir,
                        host_public_key,
                        client_public_key,
                        log,
                    };
                }
                // Another program took the port between our check and sshd's bind: next port.
                Err(log) if log.contains("Address already in use") => last_failure = log,
                Err(log) => panic!("sshd did not start:\n{log}"),
            }
        }
        panic!("sshd could not bind a port after {BIND_ATTEMPTS} attempts:\n{last_failure}");
    }
}

type SharedLog = Arc<Mutex<Vec<String>>>;

/// Start sshd and wait for its "Server listening" line. On failure the process is stopped and
/// its log returned.
fn spawn_until_listening(sshd: &Path, dir: &Path) -> Result<(Child, SharedLog), String> {
    let mut child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshd can be started");
    let log: SharedLog = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr was piped");
    let thread_log = Arc::clone(&log);
    // Drain sshd's log for its whole life (a full pipe would block it) and report when it listens.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server listening on") {
                let _ = ready_tx.send(true);
            }
            thread_log.lock().expect("log lock").push(line);
        }
        let _ = ready_tx.send(false);
    });
    if ready_rx.recv_timeout(START_TIMEOUT) == Ok(true) {
        return Ok((child, log));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = log.lock().expect("log lock").join("\n");
    Err(text)
}

impl Sshd {
    /// A server that accepts only its own client key.
    pub fn start() -> Self {
        SshdBuilder::default().start()
    }

    pub fn builder() -> SshdBuilder {
        SshdBuilder::default()
    }

    /// The sshd process id (the listener; sessions are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// The name the client config gives this server.
    pub fn alias(&self) -> &'static str {
        ALIAS
    }

    /// The server's host public key line.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The public key of the client key the server always accepts.
    pub fn client_public_key(&self) -> &str {
        &self.client_public_key
    }

    /// The private key matching [`Self::client_public_key`].
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// An `ssh_config` that reaches this server as [`Self::alias`], with its host key pinned.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The `known_hosts` file the client config pins the host key in.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// `ssh -F <client config> <alias>`, ready for a remote command as further arguments.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(self.client_config()).arg(ALIAS);
        cmd
    }

    /// `ssh` reaching this server with only `identity` offered and no config file, the host key
    /// pinned through the server's `known_hosts`. Remote command as further arguments.
    pub fn ssh_with_identity(&self, identity: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "none", "-p", &self.port().to_string(), "-i"])
            .arg(identity)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .args([
                "-o",
                &format!("HostKeyAlias={ALIAS}"),
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .arg(format!("{}@127.0.0.1", crate::current_user()));
        cmd
    }

    /// Everything sshd logged so far, for assertion messages.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // `Child::kill` signals exactly the pid we started; `wait` reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_configs(dir: &Path, port: u16, extra: &[String]) {
    let d = dir.display();
    let mut server = String::new();
    let _ = write!(
        server,
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {d}/host_key\n\
         PidFile none\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         UsePAM no\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         AllowTcpForwarding yes\n\
         Subsystem sftp internal-sftp\n\
         LogLevel VERBOSE\n"
    );
    for line in extra {
        server.push_str(line);
        server.push('\n');
    }
    std::fs::write(dir.join("sshd_config"), server).expect("write sshd_config");

    let client = format!(
        "Host {ALIAS}\n\
         \x20 HostName 127.0.0.1\n\
         \x20 Port {port}\n\
         \x20 User {user}\n\
         \x20 IdentityFile \"{d}/client_key\"\n\
         \x20 IdentitiesOnly yes\n\
         \x20 HostKeyAlias {ALIAS}\n\
         \x20 UserKnownHostsFile \"{d}/known_hosts\"\n\
         \x20 StrictHostKeyChecking yes\n\
         \x20 BatchMode yes\n\
         \x20 LogLevel ERROR\n",
        user = crate::current_user(),
    );
    std::fs::write(dir.join("ssh_config"), client).expect("write ssh_config");
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read a key ssh-keygen wrote")
        .trim()
        .to_owned()
}

fn find_sshd() -> PathBuf {
    // sshd must be started by absolute path (it re-executes itself).
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "sshd is not installed: install openssh-server (`cargo xtask ci` does this as root)",
        )
}
