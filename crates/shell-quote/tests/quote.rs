//! Quoting round-trips through a real shell: whatever the words, `sh` gives them back exactly,
//! also through the two parses of the runner chain (the management host's shell, then
//! `bash -lc`).

#![allow(clippy::unwrap_used)]

use flyte_shell_quote::{join, quote};
use proptest::prelude::*;

/// What `sh -c` receives as arguments when it runs `printf '%s\0' <script words>`.
fn through_sh(script: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf '%s\\0' {script}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut words: Vec<String> = text.split('\0').map(str::to_owned).collect();
    words.pop(); // after the last NUL
    words
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_parse_gives_the_words_back(words in prop::collection::vec("[^\0]{0,12}", 1..6)) {
        prop_assert_eq!(through_sh(&join(&words)), words);
    }

    #[test]
    fn two_parses_give_the_words_back(words in prop::collection::vec("[^\0]{0,8}", 1..4)) {
        // Inner: the words for bash -lc; outer: that command as one word for the first shell.
        let inner = format!("printf '%s\\0' {}", join(&words));
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("bash -c {}", quote(&inner))])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut got: Vec<String> = text.split('\0').map(str::to_owned).collect();
        got.pop();
        prop_assert_eq!(got, words);
    }
}
