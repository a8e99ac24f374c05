//! The git initializer as a pure plan: which git commands, in which order, with which ssh.

use std::path::{Path, PathBuf};

use crate::{ConnectionError, Result};

/// What the initializer is asked to do (Polyaxon's `git: {url, revision, flags}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitInit {
    /// Overrides the connection's default repository.
    pub url: Option<String>,
    /// A branch, tag or commit to check out after cloning.
    pub revision: Option<String>,
    /// Passed to git; each entry may hold an option and its value (`"--depth 1"`).
    /// `--experimental-fetch` means init + add remote + fetch the revision instead of a clone.
    pub flags: Vec<String>,
}

/// How ssh treats the git host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only keys listed in this known_hosts file are accepted.
    Pinned { known_hosts: PathBuf },
    /// The first key seen is recorded in this file and required afterwards (opt-in).
    LearnFirst { known_hosts: PathBuf },
}

/// One git invocation: its arguments (after `git`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitStep {
    pub args: Vec<String>,
}

impl GitStep {
    fn new<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        Self {
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl std::fmt::Display for GitStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "git {}", self.args.join(" "))
    }
}

/// `https://user:token@host/...` -> `https://host/...`; other URLs as they are (an ssh URL's
/// user is who to log in as, not a secret). Credentials never reach argv or git's config.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !matches!(scheme, "http" | "https") {
        return url.to_owned();
    }
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match path {
        Some(path) => format!("{scheme}://{host}/{path}"),
        None => format!("{scheme}://{host}"),
    }
}

/// With ssh access, an `https://host/org/repo` URL becomes `git@host:org/repo.git`; other URLs
/// (scp form, `ssh://`) are used as they are.
pub fn ssh_url(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // Credentials and the port belong to https, not to ssh.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split_once(':').map_or(host, |(h, _)| h);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("git@{host}:{path}.git")
}

/// `GIT_SSH_COMMAND` (git runs it through a shell): the key alone (no agent keys, no prompts),
/// host keys checked as `policy` says, paths quoted.
pub fn git_ssh_command(key: &Path, policy: &HostKeyPolicy) -> Result<String> {
    let (known_hosts, check) = match policy {
        HostKeyPolicy::Pinned { known_hosts } => (known_hosts, "yes"),
        HostKeyPolicy::LearnFirst { known_hosts } => (known_hosts, "accept-new"),
    };
    let quote = |word: String| {
        shlex::try_quote(&word)
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| ConnectionError::Key {
                path: word.clone(),
                reason: "the path holds a NUL byte, which no shell command can carry".to_owned(),
            })
    };
    Ok(format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o {} -o StrictHostKeyChecking={check}",
        quote(key.display().to_string())?,
        // ssh splits this value into several files at whitespace unless it is double-quoted.
        quote(format!("UserKnownHostsFile=\"{}\"", known_hosts.display()))?
    ))
}

/// Flags the initializer passes on: each with whether it takes a value. Anything else is refused
/// (an allow-list: git accepts abbreviated and glued options, so a deny-list of the ones that run
/// commands, `--upload-pack`, `-c`, `--config`, `--template`, could be walked around).
const ALLOWED_FLAGS: &[(&str, bool)] = &[
    ("--depth", true),
    ("--shallow-since", true),
    ("--shallow-exclude", true),
    ("--filter", true),
    ("--single-branch", false),
    ("--no-single-branch", false),
    ("--no-tags", false),
    ("--recurse-submodules", false),
    ("--experimental-fetch", false),
];

struct Flags {
    experimental_fetch: bool,
    recurse_submodules: bool,
    /// Passed to `git clone` or `git fetch`.
    passed: Vec<String>,
}

fn supported_flags() -> String {
    ALLOWED_FLAGS
        .iter()
        .map(|(name, value)| {
            if *value {
                format!("{name} N")
            } else {
                (*name).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_flags(flags: &[String]) -> Result<Flags> {
    let mut parsed = Flags {
        experimental_fetch: false,
        recurse_submodules: false,
        passed: Vec::new(),
    };
    let mut tokens = flags.iter().flat_map(|f| f.split_whitespace());
    while let Some(token) = tokens.next() {
        let (name, glued) = match token.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (token, None),
        };
        let Some((_, takes_value)) = ALLOWED_FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(ConnectionError::InvalidInit(format!(
                "flag {token:?} is not supported; use {}",
                supported_flags()
            )));
        };
        match (takes_value, glued) {
            (false, Some(_)) => {
                return Err(ConnectionError::InvalidInit(format!(
                    "flag {name} takes no value"
                )));
            }
            (true, Some(value)) if value.is_empty() || value.starts_with('-') => {
                return Err(ConnectionError::InvalidInit(format!(
                    "flag {name} needs a value"
                )));
            }
            (true, Some(_)) => parsed.passed.push(token.to_owned()),
            (true, None) => {
                let value = tokens
                    .next()
                    .filter(|v| !v.starts_with('-'))
                    .ok_or_else(|| {
                        ConnectionError::InvalidInit(format!("flag {name} needs a value"))
                    })?;
                parsed.passed.push(name.to_owned());
                parsed.passed.push(value.to_owned());
            }
            (false, None) => match name {
                "--experimental-fetch" => parsed.experimental_fetch = true,
                "--recurse-submodules" => {
                    parsed.recurse_submodules = true;
                    parsed.passed.push(token.to_owned());
                }
                _ => parsed.passed.push(token.to_owned()),
            },
        }
    }
    Ok(parsed)
}

/// The flags that make a clone shallow (`--depth N`, `--depth=N`, `--shallow-since=...`), for
/// the fetch of a revision into it.
fn shallow_flags(passed: &[String]) -> Vec<String> {
    let mut shallow = Vec::new();
    let mut tokens = passed.iter();
    while let Some(token) = tokens.next() {
        if token == "--depth" || token == "--shallow-since" || token == "--shallow-exclude" {
            shallow.push(token.clone());
            shallow.extend(tokens.next().cloned());
        } else if token.starts_with("--depth=") || token.starts_with("--shallow-") {
            shallow.push(token.clone());
        }
    }
    shallow
}

fn check_url(url: &str) -> Result<()> {
    if url.is_empty()
        || url.starts_with('-')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConnectionError::InvalidInit(format!(
            "{url:?} is not a repository URL"
        )));
    }
    Ok(())
}

/// The git commands that put `original_url` at `revision` into `dest`: cloned over ssh
/// (`ssh_url`), then the remote set back to `original_url`, and `rev-parse HEAD` last (its
/// output is the checked-out commit).
pub fn plan(original_url: &str, dest: &Path, init: &GitInit) -> Result<Vec<GitStep>> {
    let original_url = &without_credentials(original_url);
    check_url(original_url)?;
    let url = ssh_url(original_url);
    let flags = parse_flags(&init.flags)?;
    if let Some(revision) = &init.revision
        && (revision.is_empty()
            || revision.starts_with('-')
            || revision.contains(char::is_whitespace))
    {
        return Err(ConnectionError::InvalidInit(format!(
            "revision {revision:?} is not a branch, tag or commit"
        )));
    }
    let dest_text = dest.display().to_string();
    let in_dest = |args: &[&str]| {
        GitStep::new(
            ["-C", dest_text.as_str()]
                .iter()
                .chain(args)
                .map(|s| (*s).to_owned()),
        )
    };
    let mut steps = Vec::new();
    if flags.experimental_fetch {
        steps.push(GitStep::new(["init", "-q", "--", &dest_text]));
        steps.push(in_dest(&["remote", "add", "origin", &url]));
        let revision = init.revision.as_deref().unwrap_or("HEAD");
        let fetch_flags: Vec<&str> = flags
            .passed
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "--recurse-submodules")
            .collect();
        let mut fetch = vec!["fetch", "-q"];
        fetch.extend(fetch_flags);
        fetch.extend(["origin", revision]);
        steps.push(in_dest(&fetch));
        steps.push(in_dest(&["checkout", "-q", "FETCH_HEAD"]));
    } else {
        let mut clone = vec!["clone".to_owned(), "-q".to_owned()];
        clone.extend(flags.passed.iter().cloned());
        clone.extend(["--".to_owned(), url, dest_text.clone()]);
        steps.push(GitStep::new(clone));
        if let Some(revision) = &init.revision {
            let shallow = shallow_flags(&flags.passed);
            if shallow.is_empty() {
                // `--`: a revision named like a file is not taken for a path to restore.
                steps.push(in_dest(&["checkout", "-q", revision, "--"]));
            } else {
                // A shallow clone holds only the default branch's tip: fetch the revision itself
                // (as shallow) and check that out.
                let mut fetch = vec!["fetch", "-q"];
                fetch.extend(shallow.iter().map(String::as_str));
                fetch.extend(["origin", revision.as_str()]);
                steps.push(in_dest(&fetch));
                steps.push(in_dest(&["checkout", "-q", "FETCH_HEAD"]));
            }
        }
    }
    if flags.recurse_submodules {
        steps.push(in_dest(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
        ]));
    }
    steps.push(in_dest(&["remote", "set-url", "origin", original_url]));
    steps.push(in_dest(&["rev-parse", "HEAD"]));
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_dropped_from_urls() {
        for (url, want) in [
            ("https://user:tok@host/org/r", "https://host/org/r"),
            ("https://host/org/r", "https://host/org/r"),
            ("ssh://git@host:22/r.git", "ssh://git@host:22/r.git"),
            ("git@host:org/r.git", "git@host:org/r.git"),
            ("https://tok@host", "https://host"),
        ] {
            assert_eq!(without_credentials(url), want, "{url}");
        }
        let steps = plan(
            "https://u:tok@h/o/r",
            Path::new("/src"),
            &GitInit::default(),
        )
        .unwrap();
        assert!(!steps.iter().any(|s| s.to_string().contains("tok")));
    }

    #[test]
    fn only_known_flags_pass() {
        for (flag, want) in [
            ("-ccore.sshCommand=/tmp/x", "is not supported"),
            ("-u/tmp/x", "is not supported"),
            ("--upload-pa=/tmp/x", "is not supported"),
            ("--conf=x", "is not supported"),
            ("--templ=/tmp", "is not supported"),
            ("--depth", "needs a value"),
            ("--depth --no-tags", "needs a value"),
            ("--depth=", "needs a value"),
            ("--no-tags=1", "takes no value"),
        ] {
            let init = GitInit {
                flags: vec![flag.to_owned()],
                ..GitInit::default()
            };
            let err = plan("git@h:o/r.git", Path::new("/src"), &init)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{flag}: {err}");
        }
        let init = GitInit {
            flags: vec![
                "--depth=3".to_owned(),
                "--filter blob:none".to_owned(),
                "--no-tags".to_owned(),
            ],
            ..GitInit::default()
        };
        assert_eq!(
            plan("git@h:o/r.git", Path::new("/src"), &init).unwrap()[0].to_string(),
            "git clone -q --depth=3 --filter blob:none --no-tags -- git@h:o/r.git /src"
        );
    }

    #[test]
    fn https_urls_become_scp_form() {
        for (url, want) in [
            ("https://github.com/org/repo", "git@github.com:org/repo.git"),
            (
                "https://github.com/org/repo.git",
                "git@github.com:org/repo.git",
            ),
            (
                "https://gitlab.com/group/sub/repo/",
                "git@gitlab.com:group/sub/repo.git",
            ),
            ("https://user:tok@host:8443/org/r", "git@host:org/r.git"),
            ("http://host/org/r", "git@host:org/r.git"),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            (
                "ssh://git@host:2222/org/r.git",
                "ssh://git@host:2222/org/r.git",
            ),
        ] {
            assert_eq!(ssh_url(url), want, "{url}");
        }
    }

    #[test]
    fn the_ssh_command_pins_host_keys_and_quotes_paths() {
        let key = Path::new("/etc/.ssh dir/id_rsa");
        let kh = PathBuf::from("/etc/.ssh dir/known_hosts");
        assert_eq!(
            git_ssh_command(
                key,
                &HostKeyPolicy::Pinned {
                    known_hosts: kh.clone()
                }
            )
            .unwrap(),
            "ssh -i '/etc/.ssh dir/id_rsa' -o IdentitiesOnly=yes -o BatchMode=yes -o 'UserKnownHostsFile=\"/etc/.ssh dir/known_hosts\"' -o StrictHostKeyChecking=yes"
        );
        assert!(
            git_ssh_command(key, &HostKeyPolicy::LearnFirst { known_hosts: kh })
                .unwrap()
                .ends_with("StrictHostKeyChecking=accept-new")
        );
    }

    fn steps(url: &str, init: &GitInit) -> Vec<String> {
        plan(url, Path::new("/src"), init)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn plans_for_each_kind_of_initializer() {
        let url = "https://github.com/org/repo";
        assert_eq!(
            steps(url, &GitInit::default()),
            [
                "git clone -q -- git@github.com:org/repo.git /src",
                "git -C /src remote set-url origin https://github.com/org/repo",
                "git -C /src rev-parse HEAD",
            ]
        );
        let init = GitInit {
            revision: Some("branchA".to_owned()),
            flags: vec!["--depth 1".to_owned(), "--recurse-submodules".to_owned()],
            ..GitInit::default()
        };
        assert_eq!(
            steps(url, &init),
            [
                "git clone -q --depth 1 --recurse-submodules -- git@github.com:org/repo.git /src",
                "git -C /src fetch -q --depth 1 origin branchA",
                "git -C /src checkout -q FETCH_HEAD",
                "git -C /src submodule update -q --init --recursive",
                "git -C /src remote set-url origin https://github.com/org/repo",
                "git -C /src rev-parse HEAD",
            ]
        );
        let init = GitInit {
            revision: Some("v1.2".to_owned()),
            flags: vec!["--experimental-fetch".to_owned(), "--depth 1".to_owned()],
            ..GitInit::default()
        };
        assert_eq!(
            steps("git@host:o/r.git", &init),
            [
                "git init -q -- /src",
                "git -C /src remote add origin git@host:o/r.git",
                "git -C /src fetch -q --depth 1 origin v1.2",
                "git -C /src checkout -q FETCH_HEAD",
                "git -C /src remote set-url origin git@host:o/r.git",
                "git -C /src rev-parse HEAD",
            ]
        );
    }

    #[test]
    fn bad_initializers_are_refused() {
        for (url, init, want) in [
            (
                "-oProxyCommand=x",
                GitInit::default(),
                "is not a repository URL",
            ),
            ("", GitInit::default(), "is not a repository URL"),
            (
                "git@h:o/r.git",
                GitInit {
                    flags: vec!["--upload-pack=touch /tmp/x".to_owned()],
                    ..GitInit::default()
                },
                "is not supported",
            ),
            (
                "git@h:o/r.git",
                GitInit {
                    flags: vec!["-c core.sshCommand=x".to_owned()],
                    ..GitInit::default()
                },
                "is not supported",
            ),
            (
                "git@h:o/r.git",
                GitInit {
                    revision: Some("--orphan".to_owned()),
                    ..GitInit::default()
                },
                "is not a branch, tag or commit",
            ),
        ] {
            let err = plan(url, Path::new("/src"), &init).unwrap_err().to_string();
            assert!(err.contains(want), "{url} {init:?}: {err}");
        }
    }
}
