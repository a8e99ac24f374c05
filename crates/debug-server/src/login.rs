//! What a login looks like: the user, their shell, home and environment, and the directory
//! sessions start in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::settings::NOT_INHERITED;

/// The environment and identity every session process gets.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// The task's working directory: where shells start.
    pub workdir: PathBuf,
    /// The server's environment minus the debug contract's variables.
    pub inherited: Vec<(OsString, OsString)>,
}

/// A usable shell: the passwd entry's, unless it is a no-login shell or missing, then bash or sh.
pub fn usable_shell(passwd_shell: &Path) -> PathBuf {
    let name = passwd_shell
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let refuses = matches!(name, "false" | "nologin" | "") || !passwd_shell.exists();
    if !refuses {
        return passwd_shell.to_owned();
    }
    ["/bin/bash", "/usr/bin/bash", "/bin/sh"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

impl Login {
    /// The login of the user this server runs as, starting in `workdir`.
    // The session's login environment is the task's own: inherited, less the debug contract.
    #[allow(clippy::disallowed_methods)]
    pub fn current(workdir: PathBuf) -> Self {
        let entry = nix::unistd::User::from_uid(nix::unistd::Uid::current())
            .ok()
            .flatten();
        let (user, home, shell) = match entry {
            Some(u) => (u.name, u.dir, u.shell),
            // Containers sometimes run as a uid with no passwd entry.
            None => (
                std::env::var("USER").unwrap_or_else(|_| nix::unistd::Uid::current().to_string()),
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
                PathBuf::from("/bin/sh"),
            ),
        };
        let inherited = std::env::vars_os()
            .filter(|(k, _)| !NOT_INHERITED.iter().any(|n| k == n))
            .collect();
        Self {
            user,
            home,
            shell: usable_shell(&shell),
            workdir,
            inherited,
        }
    }

    /// Add the task's own variables to what sessions inherit (when the server does not run in
    /// the task's process, as in the sandbox); the debug contract's variables stay out.
    pub fn add_task_environment(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (key, value) in vars {
            if NOT_INHERITED.iter().any(|n| key == *n) {
                continue;
            }
            self.inherited.retain(|(k, _)| k != key.as_str());
            self.inherited.push((key.into(), value.into()));
        }
    }

    /// The environment of a session: inherited, then the login variables, then what the client
    /// sent (`ssh -o SendEnv`), then TERM.
    pub fn environment(
        &self,
        client: &[(String, String)],
        term: Option<&str>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = self.inherited.clone();
        let mut set = |k: &str, v: OsString| {
            env.retain(|(key, _)| key != k);
            env.push((k.into(), v));
        };
        set("HOME", self.home.clone().into_os_string());
        set("USER", self.user.clone().into());
        set("LOGNAME", self.user.clone().into());
        set("SHELL", self.shell.clone().into_os_string());
        for (k, v) in client {
            set(k, v.into());
        }
        set("TERM", term.unwrap_or("dumb").into());
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_login_shells_fall_back() {
        for shell in ["/usr/sbin/nologin", "/bin/false", "/no/such/shell", ""] {
            let got = usable_shell(Path::new(shell));
            assert!(
                got.ends_with("bash") || got.ends_with("sh"),
                "{shell}: {got:?}"
            );
        }
        assert_eq!(usable_shell(Path::new("/bin/sh")), PathBuf::from("/bin/sh"));
    }

    #[test]
    fn environment_drops_the_debug_contract_and_sets_login_variables() {
        let login = Login {
            user: "u".into(),
            home: "/home/u".into(),
            shell: "/bin/sh".into(),
            workdir: "/work".into(),
            inherited: vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/wrong".into()),
            ],
        };
        let env = login.environment(&[("LANG".into(), "C.UTF-8".into())], Some("xterm"));
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("HOME").as_deref(), Some("/home/u"));
        assert_eq!(get("USER").as_deref(), Some("u"));
        assert_eq!(get("LOGNAME").as_deref(), Some("u"));
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(get("TERM").as_deref(), Some("xterm"));
        assert_eq!(get("PATH").as_deref(), Some("/bin"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }
}
