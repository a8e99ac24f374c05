//! Writing values so that ssh reads back exactly what we mean.
//!
//! Three layers of interpretation can bite: ssh_config's own argument splitting (whitespace,
//! quotes, backslashes, `#`), ssh's `%` token expansion in paths and commands (a literal `%` is
//! `%%`), and, for `ProxyCommand`, the shell that runs it.

use crate::{Result, SshConfigError};

fn reject_control(option: &'static str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(SshConfigError::InvalidValue {
            option,
            reason: format!(
                "{value:?} contains the control character {c:?}, which ssh_config cannot hold"
            ),
        });
    }
    Ok(())
}

/// One argument as ssh_config's parser will split it back: as is when it has nothing special,
/// else in double quotes with `"` and `\` escaped.
pub(crate) fn config_arg(option: &'static str, value: &str) -> Result<String> {
    reject_control(option, value)?;
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '#' | '='));
    if plain {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// A value of an option that expands `%` tokens (`IdentityFile`, `UserKnownHostsFile` ...).
pub(crate) fn expanded_arg(option: &'static str, value: &str) -> Result<String> {
    config_arg(option, &value.replace('%', "%%"))
}

/// A `ProxyCommand` value: ssh takes the rest of the line verbatim, expands `%` tokens, and hands
/// it to the shell. So each word is shell-quoted, then every `%` doubled.
pub(crate) fn proxy_command(words: &[&str]) -> Result<String> {
    for word in words {
        reject_control("ProxyCommand", word)?;
    }
    // Control characters (NUL among them) were refused above, so shlex quotes every word.
    let line =
        shlex::try_join(words.iter().copied()).map_err(|e| SshConfigError::InvalidValue {
            option: "ProxyCommand",
            reason: e.to_string(),
        })?;
    Ok(line.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_args() {
        for (value, want) in [
            ("plain", "plain"),
            ("/a/b c", r#""/a/b c""#),
            (r#"say "hi""#, r#""say \"hi\"""#),
            (r"C:\x", r#""C:\\x""#),
            ("a#b", r#""a#b""#),
            ("", r#""""#),
        ] {
            assert_eq!(config_arg("User", value).unwrap(), want, "{value:?}");
        }
        assert!(config_arg("User", "a\nb").is_err());
        assert_eq!(expanded_arg("IdentityFile", "/k/100%").unwrap(), "/k/100%%");
    }

    #[test]
    fn proxy_commands() {
        assert_eq!(
            proxy_command(&["/usr/bin/flyte-run", "tunnel", "wss://h/p?q=1&r=2"]).unwrap(),
            "/usr/bin/flyte-run tunnel 'wss://h/p?q=1&r=2'"
        );
        assert_eq!(
            proxy_command(&["/opt/my tools/it's", "50%"]).unwrap(),
            r#""/opt/my tools/it's" '50%%'"#
        );
        assert!(proxy_command(&["a\nb"]).is_err());
    }
}
