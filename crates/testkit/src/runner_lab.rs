//! A runner chain to test against: a real sshd on 127.0.0.1 as the management host, whose PATH
//! has a stand-in `incus`, and a "VM" home whose login profile puts a stand-in `kubectl` on
//! PATH (no VM or cluster can run here; the scripts in `fixtures/` behave like those
//! interfaces). Everything else is real: ssh, sshd, bash, curl, python3.

use std::path::{Path, PathBuf};

use crate::{Sshd, TempHome};

const INCUS: &str = include_str!("../fixtures/incus");
const KUBECTL: &str = include_str!("../fixtures/kubectl");

/// The lab. Dropping it kills any port-forward the kubectl stand-in left running, by pid.
pub struct RunnerLab {
    home: TempHome,
    sshd: Sshd,
}

impl std::fmt::Debug for RunnerLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerLab")
            .field("path", &self.path())
            .field("management_host_port", &self.sshd.port())
            .finish_non_exhaustive()
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("write a stand-in script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the stand-in executable");
}

impl RunnerLab {
    pub fn new() -> Self {
        let home = TempHome::new();
        let lab = home.path();
        let mgmt_bin = lab.join("mgmt-bin");
        let vm_bin = lab.join("vm-bin");
        let mgmt_tmp = lab.join("mgmt-tmp");
        for dir in [
            &mgmt_bin,
            &vm_bin,
            &mgmt_tmp,
            &lab.join("vm-home"),
            &lab.join("www"),
        ] {
            std::fs::create_dir_all(dir).expect("create the lab's directories");
        }
        write_executable(&mgmt_bin.join("incus"), INCUS);
        write_executable(&vm_bin.join("kubectl"), KUBECTL);
        std::fs::write(
            lab.join("vm-home/.bash_profile"),
            format!("export PATH={}:$PATH\n", vm_bin.display()),
        )
        .expect("write the VM's profile");
        std::fs::write(lab.join("www/hello.txt"), "hello from the pod\n")
            .expect("write the pod's page");
        let sshd = Sshd::builder()
            // The management host's temporary files go to the lab's `mgmt-tmp`, where tests
            // can see them.
            .config(&format!(
                "SetEnv PATH={}:/usr/bin:/bin TMPDIR={}",
                mgmt_bin.display(),
                mgmt_tmp.display()
            ))
            .start();
        Self { home, sshd }
    }

    /// The lab's own directory (also a usable HOME).
    pub fn path(&self) -> &Path {
        self.home.path()
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The VM name the incus stand-in knows.
    pub fn vm(&self) -> &'static str {
        "dap-runner"
    }

    /// Where the kubectl stand-in lives (replace it to make kubectl misbehave).
    pub fn kubectl_path(&self) -> PathBuf {
        self.path().join("vm-bin/kubectl")
    }

    /// While this file exists, `incus exec` fails as it does before the VM agent connects.
    pub fn agent_down_flag(&self) -> PathBuf {
        self.path().join("agent-down")
    }

    /// The argv of each kubectl call so far.
    pub fn kubectl_calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.path().join("kubectl.argv")).unwrap_or_default();
        text.split("\0\n")
            .filter(|call| !call.is_empty())
            .map(|call| call.split('\0').map(str::to_owned).collect())
            .collect()
    }
}

impl Default for RunnerLab {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RunnerLab {
    fn drop(&mut self) {
        let pids =
            std::fs::read_to_string(self.path().join("port-forward.pids")).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
