//! `ssh::exec` through the system OpenSSH client against a real sshd started by the test.

#![allow(clippy::unwrap_used)]

use flyte_testkit::{Sshd, TempHome};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

#[test]
fn ssh_exec_runs_commands_through_the_system_client() {
    let home = TempHome::new();
    let sshd = Sshd::start();
    let config = sshd.client_config().display().to_string();
    let alias = sshd.alias();
    let run = |script: &str, extra: &[&str]| {
        let script = script
            .replace("CONFIG", &format!("{config:?}"))
            .replace("ALIAS", &format!("{alias:?}"));
        home.command(BIN)
            .args(extra)
            .args(["-e", &script])
            .output()
            .unwrap()
    };
    for (case, script, want) in [
        (
            "exit code, stdout and stderr",
            r#"let r = ssh::exec(ALIAS, "echo out; echo err >&2; exit 3", #{ config_path: CONFIG }); `${r.code}|${r.stdout}|${r.stderr}`"#,
            "3|out\n|err\n",
        ),
        (
            "array words arrive as they are",
            r#"ssh::exec(ALIAS, ["printf", "%s|", "a b", "it's", "$HOME"], #{ config_path: CONFIG }).stdout"#,
            "a b|it's|$HOME|",
        ),
        (
            "4 MiB of input to a command that echoes it back: no deadlock",
            r#"let big = ""; big.pad(4194304, 'x'); ssh::exec(ALIAS, "cat", #{ config_path: CONFIG, input: big }).stdout.len()"#,
            "4194304",
        ),
        (
            "4 MiB of input to a command that never reads it",
            r#"let big = ""; big.pad(4194304, 'x'); ssh::exec(ALIAS, "echo ignored", #{ config_path: CONFIG, input: big }).stdout"#,
            "ignored\n",
        ),
        (
            "input is counted remotely",
            r#"let out = ssh::exec(ALIAS, "wc -c", #{ config_path: CONFIG, input: "hello" }).stdout; out.trim(); out"#,
            "5",
        ),
    ] {
        let out = run(script, &[]);
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        assert_eq!(text, want, "{case}");
    }

    for (case, script, want) in [
        (
            "check turns a failure into an error",
            r#"ssh::exec(ALIAS, "echo why >&2; exit 4", #{ config_path: CONFIG, check: true })"#,
            "the remote command exited with 4: why",
        ),
        (
            "a command that outlives its timeout",
            r#"ssh::exec(ALIAS, "sleep 30", #{ config_path: CONFIG, timeout: 1 })"#,
            "no result within 1 s",
        ),
        (
            "an alias that would be an option",
            r#"ssh::exec("-oProxyCommand=touch /tmp/x", "true")"#,
            "alias",
        ),
        (
            "an unknown option",
            r#"ssh::exec(ALIAS, "true", #{ confg_path: CONFIG })"#,
            "unknown option `confg_path`",
        ),
        (
            "a command of the wrong type",
            "ssh::exec(ALIAS, 42)",
            "must be a string or an array of strings",
        ),
    ] {
        let out = run(script, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(want), "{case}: {stderr}");
    }

    // A dry run prints the command and runs nothing.
    let marker = home.path().join("ran");
    let script = format!(
        r#"ssh::exec(ALIAS, "touch {}", #{{ config_path: CONFIG }}).code"#,
        marker.display()
    );
    let out = run(&script, &["--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("dry-run: ssh -F "), "{text}");
    assert!(text.ends_with("\n0\n"), "{text}");
    assert!(!marker.exists());
}
