//! POSIX shell quoting: a word comes out of one shell parse exactly as it went in.
//!
//! Used wherever flyte-run builds a command line a shell will parse: ssh's remote command and
//! `bash -lc` in the runner chain, `GIT_SSH_COMMAND`, ssh_config's `ProxyCommand`.
//!
//! ```
//! assert_eq!(flyte_shell_quote::join(&["kubectl", "-n", "my ns"]), "kubectl -n 'my ns'");
//! ```

/// Quote `word` for a POSIX shell. Words made only of characters no shell treats specially are
/// left as they are (so commands stay readable in logs); anything else is single-quoted, with
/// each `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Quote each word and join them with spaces: one shell parse gives back exactly `words`.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_they_need_it() {
        for (word, want) in [
            ("get", "get"),
            ("-n", "-n"),
            ("app=web", "app=web"),
            ("", "''"),
            ("my ns", "'my ns'"),
            ("it's", r"'it'\''s'"),
            ("$HOME", "'$HOME'"),
            ("a;b", "'a;b'"),
            ("*", "'*'"),
            ("~", "'~'"),
            ("line\nbreak", "'line\nbreak'"),
            ("{.items[*].metadata.name}", "'{.items[*].metadata.name}'"),
        ] {
            assert_eq!(quote(word), want, "{word:?}");
        }
    }
}
