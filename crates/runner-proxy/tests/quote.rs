//! The runner chain's quoting (shlex) round-trips through real shells: whatever the words, the
//! script `kubectl_script` builds gives them back after one `sh` parse, and after the two parses
//! of the runner chain (the management host's shell, then `bash -lc` in the VM, played here by
//! `eval` in bash) when `in_vm` wraps it.

#![allow(clippy::unwrap_used)]
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]

use flyte_runner_proxy::remote::{in_vm, kubectl_script};
use proptest::prelude::*;

/// The words `kubectl` receives when `sh -c` runs `prelude` then `script` (kubectl prints its
/// arguments, NUL-separated).
fn kubectl_args(prelude: &str, script: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("{prelude}{script}")])
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

/// kubectl, run by the first shell.
const KUBECTL: &str = r#"kubectl() { printf '%s\0' "$@"; }; "#;
/// incus, as the management host runs it: the sixth argument (after `exec VM -- bash -lc`) is
/// parsed once more by bash, where kubectl prints its arguments.
const INCUS: &str =
    r#"incus() { bash -c 'kubectl() { printf "%s\0" "$@"; }; eval "$1"' _ "$6"; }; "#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_parse_gives_the_words_back(words in prop::collection::vec("[^\0]{0,12}", 1..6)) {
        let script = kubectl_script(&words).unwrap();
        prop_assert_eq!(kubectl_args(KUBECTL, &script), words);
    }

    #[test]
    fn the_runner_chains_two_parses_give_the_words_back(
        words in prop::collection::vec("[^\0]{0,8}", 1..4),
        vm in "[a-z][a-z0-9 '-]{0,8}",
    ) {
        let command = in_vm(&vm, &kubectl_script(&words).unwrap()).unwrap();
        prop_assert_eq!(kubectl_args(INCUS, &command), words);
    }
}

#[test]
fn a_nul_byte_is_refused_naming_the_word() {
    let err = kubectl_script(&["get", "a\0b"]).unwrap_err().to_string();
    assert!(err.contains("NUL") && err.contains("a\\0b"), "{err}");
    assert!(in_vm("vm\0", "true").is_err());
}
