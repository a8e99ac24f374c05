//! `cargo xtask bench`: figures measured against a reference in the same run, on this machine.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use flyte_testkit::{Sshd, TempHome, ssh_keygen};

const TRANSFER_BYTES: u64 = 256 * 1024 * 1024;
const TRANSFER_RUNS: usize = 5;
const CONNECT_RUNS: usize = 10;
const STARTUP_RUNS: usize = 20;
const CLI_RUNS: usize = 30;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None => {
            reconciler()?;
            tunnel()?;
            sandbox()?;
            cli()?;
            runner()?;
            resume()?;
            operator()
        }
        Some("reconciler") => reconciler(),
        Some("tunnel") => tunnel(),
        Some("sandbox") => sandbox(),
        Some("cli") => cli(),
        Some("operator") => operator(),
        Some("runner") => runner(),
        Some("resume") => resume(),
        // Internal: run a command repeatedly and print its median time and peak memory.
        Some("cli-probe") => cli_probe(&args[1..]),
        Some(other) => {
            bail!(
                "unknown benchmark {other:?}; known: reconciler, tunnel, sandbox, cli, operator, runner, resume"
            )
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn reconciler() -> anyhow::Result<()> {
    println!("== reconciler core (release build, one core)");
    let out = cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "flyte-reconciler-core",
            "--example",
            "bench_decisions",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the reconciler benchmark")?;
    ensure!(out.status.success(), "the reconciler benchmark failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = text
        .lines()
        .find_map(|l| l.strip_prefix("decisions_per_second="))
        .context("the benchmark printed no decisions_per_second line")?;
    println!("decisions per second: {figure} (target: over 1,000,000)\n");
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Run a command once with stdout discarded and return how long it took.
fn time_once(cmd: &mut Command, must_succeed: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let elapsed = started.elapsed();
    ensure!(
        out.status.success() || !must_succeed,
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(elapsed)
}

/// The release debug server, on a free port, and how to reach it with `ssh`.
struct OurServer {
    child: std::process::Child,
    options: Vec<String>,
}

impl Drop for OurServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ours(bin: &Path, home: &TempHome, key: &Path) -> anyhow::Result<OurServer> {
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let mut child = home
        .command(bin)
        .args(["debug-server", "--port", "0"])
        .env("_F_SSH_PK", public.trim())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start flyte-run debug-server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("piped stdout")?).read_line(&mut line)?;
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no ready line from the debug server")?
        .to_owned();
    let host_key = std::fs::read_to_string(
        home.path()
            .join(".flyte-ssh-debug/ssh_host_ed25519_key.pub"),
    )?;
    let known_hosts = home.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("flyte-debug {host_key}"))?;
    let options = vec![
        "-F".into(),
        "none".into(),
        "-i".into(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "HostKeyAlias=flyte-debug".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        format!(
            "ProxyCommand={} tunnel ws://127.0.0.1:{port}/",
            bin.display()
        ),
        "root@flyte-debug".into(),
    ];
    Ok(OurServer { child, options })
}

/// Build the `flyte-run` binary in release mode; where it is.
fn build_release_flyte_run() -> anyhow::Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "-p",
            "flyte-run",
        ])
        .status()?;
    ensure!(status.success(), "cannot build flyte-run in release mode");
    Ok(root().join("target/release/flyte-run"))
}

fn tunnel() -> anyhow::Result<()> {
    println!(
        "== SSH tunnel: flyte-run tunnel + bridge + debug-server vs OpenSSH sshd, both on loopback"
    );
    let bin = build_release_flyte_run()?;
    let home = TempHome::new();
    let key = home.path().join("id_ed25519");
    ssh_keygen(&key, "bench");
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let sshd = Sshd::builder().authorize(&public).start();
    let ours = start_ours(&bin, &home, &key)?;
    let zeros = home.path().join("zeros");
    File::create(&zeros)?.set_len(TRANSFER_BYTES)?;

    let reference = |remote: &str, cipher: Option<&str>| {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(sshd.client_config());
        if let Some(cipher) = cipher {
            cmd.args(["-c", cipher]);
        }
        cmd.arg(sshd.alias()).arg(remote);
        cmd
    };
    let flyte = |remote: &str, cipher: Option<&str>| {
        let mut cmd = Command::new("ssh");
        if let Some(cipher) = cipher {
            cmd.args(["-c", cipher]);
        }
        cmd.args(&ours.options).arg(remote);
        cmd
    };
    let download = format!("head -c {TRANSFER_BYTES} /dev/zero");
    let upload = "cat > /dev/null";
    // (name, cipher, remote command, stdin from the zeros file, whether throughput (not time)
    // is compared, runs)
    let mut workloads = Vec::new();
    for cipher in CIPHERS {
        workloads.push((
            format!("download 256 MiB (ssh host 'head -c 256M /dev/zero'), {cipher}"),
            Some(cipher),
            download.as_str(),
            false,
            true,
            TRANSFER_RUNS,
        ));
        workloads.push((
            format!("upload 256 MiB (piped into ssh host 'cat >/dev/null'), {cipher}"),
            Some(cipher),
            upload,
            true,
            true,
            TRANSFER_RUNS,
        ));
    }
    workloads.push((
        "connect (ssh host true)".to_owned(),
        None,
        "true",
        false,
        false,
        CONNECT_RUNS,
    ));
    let mut rows: Vec<Row> = Vec::new();
    for (name, cipher, remote, stdin_file, throughput, runs) in workloads {
        let (mut ref_samples, mut our_samples) = (Vec::new(), Vec::new());
        // Interleave reference and ours run by run, so drift on the machine hits both alike.
        for _ in 0..runs {
            for (samples, mut cmd) in [
                (&mut ref_samples, reference(remote, cipher)),
                (&mut our_samples, flyte(remote, cipher)),
            ] {
                cmd.stdin(if stdin_file {
                    Stdio::from(File::open(&zeros)?)
                } else {
                    Stdio::null()
                });
                samples.push(time_once(&mut cmd, true)?);
            }
        }
        let (r, o) = (median(ref_samples), median(our_samples));
        let ratio = if throughput {
            r.as_secs_f64() / o.as_secs_f64()
        } else {
            o.as_secs_f64() / r.as_secs_f64()
        };
        rows.push((name, r, o, ratio, throughput));
    }
    // Port 9 on loopback refuses at once: this times start-up, argument parsing, one connect
    // attempt and exit (non-zero by design).
    let mut startup_samples = Vec::new();
    for _ in 0..STARTUP_RUNS {
        startup_samples.push(time_once(
            Command::new(&bin).args(["tunnel", "ws://127.0.0.1:9/"]),
            false,
        )?);
    }
    let startup = median(startup_samples);

    print_table(&rows, startup);
    Ok(())
}

/// One measured workload: name, reference median, our median, ratio, and whether the ratio
/// compares throughput (else time).
type Row = (String, Duration, Duration, f64, bool);

fn print_table(rows: &[Row], startup: Duration) {
    println!("\n| work | OpenSSH sshd (median) | flyte-run (median) | ratio | target |");
    println!("|---|---|---|---|---|");
    for (name, r, o, ratio, higher_is_better) in rows {
        let target = if *higher_is_better {
            ">= 1.00x throughput"
        } else {
            "<= 1.20x time"
        };
        let what = if *higher_is_better {
            "throughput"
        } else {
            "time"
        };
        println!(
            "| {name} | {:.3} s | {:.3} s | {ratio:.2}x {what} | {target} |",
            r.as_secs_f64(),
            o.as_secs_f64()
        );
    }
    println!(
        "| tunnel process start to exit (refused connection) | - | {:.1} ms | - | < 5 ms |",
        startup.as_secs_f64() * 1000.0
    );
}

const LAUNCH_RUNS: usize = 7;

/// Launch of a debug run to its route being ready, as a user meets it: `flyte-run -e` launches
/// the run and waits for its IDE link, then `flyte-run tunnel` completes the WebSocket upgrade
/// (it exits 0 once connected and its input ends). Release build, sandbox on loopback.
fn sandbox() -> anyhow::Result<()> {
    println!("== sandbox: launch of a debug run to its route answering (release build)");
    let bin = build_release_flyte_run()?;
    let home = TempHome::new();
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = home
            .command(&bin)
            .env_remove("FLYTE_ENDPOINT")
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "flyte-run {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["sandbox", "start"])?;
    let result = (|| -> anyhow::Result<Vec<Duration>> {
        let token = run(&[
            "-e",
            r#"let k = keys::ensure_keypair(); auth::ensure_api_key("bench"); auth::bearer_token().authorization()"#,
        ])?;
        let headers = home.path().join("bench.headers");
        std::fs::write(&headers, format!("Authorization: {}\n", token.trim()))?;
        let mut samples = Vec::new();
        for i in 0..LAUNCH_RUNS {
            let script = format!(
                r#"let key = keys::ensure_keypair();
                   runs::launch(#{{ name: "bench-{i}", command: ["sleep", "30"], env: #{{ _F_E_SSH: "1", _F_SSH_PK: key.public_key }} }});
                   runs::wait("bench-{i}", #{{ poll_interval: 0 }});
                   runs::details("bench-{i}").log_links.filter(|l| l.type == "IDE")[0].uri"#
            );
            let started = Instant::now();
            let uri = run(&["-e", &script])?;
            let upgraded = Command::new(&bin)
                .args(["tunnel", uri.trim(), "--http-headers-file"])
                .arg(&headers)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()?;
            samples.push(started.elapsed());
            ensure!(
                upgraded.success(),
                "the tunnel could not reach {}",
                uri.trim()
            );
            run(&["-e", &format!(r#"runs::abort("bench-{i}")"#)])?;
        }
        Ok(samples)
    })();
    run(&["sandbox", "stop"])?;
    let samples = result?;
    let mut sorted = samples.clone();
    sorted.sort_unstable();
    println!(
        "launch to route ready: median {:.0} ms (min {:.0}, max {:.0}, {LAUNCH_RUNS} runs); target < 300 ms",
        median(samples).as_secs_f64() * 1000.0,
        sorted[0].as_secs_f64() * 1000.0,
        sorted[sorted.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}

/// What one probe measured: median wall time and the peak resident set of any run.
struct Probe {
    median: Duration,
    peak_rss_kib: u32,
}

/// Run `program args` in a child xtask that does nothing else, so the peak memory it reports
/// (the largest child it waited for) is the program's, not the cargo build's.
fn probe(program: &Path, args: &[&str], home: &Path) -> anyhow::Result<Probe> {
    let out = Command::new(std::env::current_exe()?)
        .args(["bench", "cli-probe"])
        .arg(program)
        .args(args)
        .env("HOME", home)
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "probing {} failed", program.display());
    let text = String::from_utf8(out.stdout)?;
    let mut fields = text.split_whitespace();
    let (Some(micros), Some(rss)) = (fields.next(), fields.next()) else {
        bail!("the probe printed {text:?}");
    };
    Ok(Probe {
        median: Duration::from_micros(micros.parse()?),
        peak_rss_kib: rss.parse()?,
    })
}

fn cli_probe(args: &[String]) -> anyhow::Result<()> {
    let Some((program, rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench cli-probe PROGRAM [ARGS...]");
    };
    let mut samples = Vec::with_capacity(CLI_RUNS);
    for _ in 0..CLI_RUNS {
        let started = Instant::now();
        let status = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        samples.push(started.elapsed());
        ensure!(status.success(), "{program} {rest:?} failed");
    }
    // Linux reports ru_maxrss in KiB: the largest resident set among waited-for children.
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    println!("{} {}", median(samples).as_micros(), usage.max_rss());
    Ok(())
}

/// `flyte-run --version` and a no-op playbook: wall time and peak memory, beside Flyte's own
/// Python CLI printing its help when the interop venv is there (`cargo xtask ci` makes it).
fn cli() -> anyhow::Result<()> {
    println!(
        "== flyte-run start-up: --version and a no-op playbook (release build, median of {CLI_RUNS})"
    );
    let bin = build_release_flyte_run()?;
    let home = TempHome::new();
    let playbook = home.path().join("noop.rhai");
    std::fs::write(&playbook, "// does nothing\n")?;
    let playbook = playbook.display().to_string();
    let show = |what: &str, p: &Probe, target: &str| {
        println!(
            "{what:<28} {:>8.1} ms {:>8.1} MB   {target}",
            p.median.as_secs_f64() * 1000.0,
            f64::from(p.peak_rss_kib) / 1024.0
        );
    };
    let version = probe(&bin, &["--version"], home.path())?;
    show("flyte-run --version", &version, "target < 10 ms, < 20 MB");
    let noop = probe(&bin, &[&playbook], home.path())?;
    show("flyte-run noop.rhai", &noop, "target < 10 ms, < 20 MB");
    let flyte = root().join("target/interop-venv/bin/flyte");
    if flyte.exists() {
        let reference = probe(&flyte, &["--help"], home.path())?;
        show("flyte --help (Python)", &reference, "reference");
        println!(
            "ratio: flyte-run --version takes {:.3}x the time and {:.3}x the memory of flyte --help",
            version.median.as_secs_f64() / reference.median.as_secs_f64(),
            f64::from(version.peak_rss_kib) / f64::from(reference.peak_rss_kib)
        );
    } else {
        println!("(no reference: run `cargo xtask ci` once to create target/interop-venv)");
    }
    Ok(())
}

const OPERATOR_ACTIONS: u32 = 1000;

/// The apiserver's own request counter (`apiserver_request_total`) for what the operator does:
/// every request on TaskActions and Leases, and pod GET/POST/DELETE (kwok and the scheduler
/// only patch pod status and bind). `(total, TaskAction creations)`.
fn operator_requests(metrics: &str) -> (u64, u64) {
    let mut total = 0;
    let mut creations = 0;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
        };
        let count: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (resource, verb, sub) = (label("resource"), label("verb"), label("subresource"));
        let ours = match resource {
            "taskactions" | "leases" => true,
            "pods" => sub.is_empty() && matches!(verb, "GET" | "POST" | "DELETE"),
            _ => false,
        };
        if ours {
            total += count;
        }
        if resource == "taskactions" && verb == "POST" {
            creations += count;
        }
    }
    (total, creations)
}

/// 1,000 TaskActions created at once on a real API server with kwok's node: the time until all
/// are terminal, the operator's API requests per action, its peak memory; beside it, 1,000 runs
/// on the sandbox.
fn operator() -> anyhow::Result<()> {
    println!(
        "== operator: {OPERATOR_ACTIONS} TaskActions at once (release build, real API server, kwok)"
    );
    let bin = build_release_flyte_run()?;
    let cluster = flyte_testkit::KubeCluster::start();
    let crd = serde_json::to_string(&flyte_operator::crd::crd())?;
    cluster.request(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(&crd),
    );
    // The CRD serves once established; a list answers then.
    let deadline = Instant::now() + Duration::from_mins(1);
    while !list_answers(&cluster) {
        ensure!(Instant::now() < deadline, "the CRD was not established");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut operator = Command::new(&bin)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("FLYTE_RUN_LOG", "warn")
        .args(["operator", "--namespace", "default", "--concurrency", "64"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let result = drive_actions(&cluster, operator.id());
    let _ = operator.kill();
    let _ = operator.wait();
    let (elapsed, requests, peak_kib) = result?;
    println!(
        "operator: {OPERATOR_ACTIONS} actions terminal in {:.1} s ({:.0} actions/s), {:.1} API requests per action, peak memory {:.1} MB",
        elapsed.as_secs_f64(),
        f64::from(OPERATOR_ACTIONS) / elapsed.as_secs_f64(),
        f64::from(u32::try_from(requests).unwrap_or(u32::MAX)) / f64::from(OPERATOR_ACTIONS),
        f64::from(peak_kib) / 1024.0
    );
    drop(cluster);
    let sandbox = sandbox_runs(&bin)?;
    println!(
        "sandbox: {OPERATOR_ACTIONS} runs (`true`) launched and finished in {:.1} s ({:.0} runs/s); ratio operator/sandbox time {:.2}x",
        sandbox.as_secs_f64(),
        f64::from(OPERATOR_ACTIONS) / sandbox.as_secs_f64(),
        elapsed.as_secs_f64() / sandbox.as_secs_f64()
    );
    Ok(())
}

fn list_answers(cluster: &flyte_testkit::KubeCluster) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.request(
            "GET",
            "/apis/flyte.org/v1/namespaces/default/taskactions?limit=1",
            None,
        )
    }))
    .is_ok()
}

/// Create the actions (64 requests in flight), wait until every one is terminal; the time, the
/// operator's requests, and its peak resident memory (KiB, `VmHWM`).
fn drive_actions(
    cluster: &flyte_testkit::KubeCluster,
    operator_pid: u32,
) -> anyhow::Result<(Duration, u64, u32)> {
    use buffa::Message as _;
    use futures_util::StreamExt as _;
    let template = flyte_idl::flyteidl2::core::TaskTemplate {
        r#type: "container".to_owned(),
        target: Some(
            flyte_idl::flyteidl2::core::Container {
                image: flyte_testkit::IMAGE_SUCCEEDS.to_owned(),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
    .encode_to_vec();
    let (before, _) = operator_requests(&cluster.request("GET", "/metrics", None));
    let runtime = tokio::runtime::Runtime::new()?;
    let kubeconfig = cluster.kubeconfig();
    let elapsed = runtime.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let api: kube::Api<flyte_operator::crd::TaskAction> =
            kube::Api::namespaced(client, "default");
        let started = Instant::now();
        let requests = futures_util::stream::iter(0..OPERATOR_ACTIONS).map(|i| {
            let api = api.clone();
            let template = template.clone();
            async move {
                let name = format!("bench-{i}");
                let mut action = flyte_operator::crd::TaskAction::new(
                    &name,
                    flyte_operator::crd::TaskActionSpec {
                        run_name: name.clone(),
                        project: "flytesnacks".to_owned(),
                        domain: "development".to_owned(),
                        action_name: "a0".to_owned(),
                        task_type: "container".to_owned(),
                        input_uri: "s3://b/in".to_owned(),
                        run_output_base: "s3://b/out".to_owned(),
                        task_template: Some(flyte_operator::crd::Bytes(template)),
                        ..Default::default()
                    },
                );
                action.metadata.namespace = Some("default".to_owned());
                api.create(&kube::api::PostParams::default(), &action).await
            }
        });
        let answers: Vec<_> = requests.buffer_unordered(64).collect().await;
        for result in answers {
            result?;
        }
        let deadline = Instant::now() + Duration::from_mins(15);
        loop {
            let list = api.list(&kube::api::ListParams::default()).await?;
            let terminal = list
                .items
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| s.to_core().is_terminal()))
                .count();
            if terminal == OPERATOR_ACTIONS as usize {
                return Ok::<_, anyhow::Error>(started.elapsed());
            }
            ensure!(
                Instant::now() < deadline,
                "only {terminal} of {OPERATOR_ACTIONS} actions ended in 15 minutes"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })?;
    let (after, creations) = operator_requests(&cluster.request("GET", "/metrics", None));
    let peak_kib = std::fs::read_to_string(format!("/proc/{operator_pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Our own creations and the bench's lists are not the operator's.
    Ok((
        elapsed,
        after.saturating_sub(before).saturating_sub(creations),
        peak_kib,
    ))
}

/// 1,000 runs of `true` launched at once on the sandbox and waited for.
fn sandbox_runs(bin: &Path) -> anyhow::Result<Duration> {
    let home = TempHome::new();
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = home
            .command(bin)
            .env_remove("FLYTE_ENDPOINT")
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "flyte-run {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&["sandbox", "start"])?;
    let script = format!(
        r#"for i in 0..{OPERATOR_ACTIONS} {{ runs::launch(#{{ name: `bench-${{i}}`, command: ["true"] }}); }}
           for i in 0..{OPERATOR_ACTIONS} {{ runs::wait(`bench-${{i}}`, #{{ phase: "SUCCEEDED", poll_interval: 0 }}); }}"#
    );
    let started = Instant::now();
    let result = run(&["--cpu-limit", "600", "-e", &script]);
    let elapsed = started.elapsed();
    run(&["sandbox", "stop"])?;
    result?;
    Ok(elapsed)
}

const RUNNER_CALLS: u32 = 30;

/// 30 kubectl calls through the runner chain (real ssh and sshd; incus and kubectl are the
/// lab's stand-ins): each on a fresh SSH connection, then all on one shared connection.
fn runner() -> anyhow::Result<()> {
    println!(
        "== runner: {RUNNER_CALLS} kubectl calls through ssh, fresh connections vs one shared"
    );
    let lab = flyte_testkit::RunnerLab::new();
    let sshd = lab.sshd();
    let config = flyte_runner_proxy::RunnerConfig {
        ssh_host: sshd.alias().to_owned(),
        ssh_key: sshd.client_key(),
        vm: lab.vm().to_owned(),
        ssh_options: vec!["-F".to_owned(), sshd.client_config().display().to_string()],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let time = |runner: &flyte_runner_proxy::Runner| -> anyhow::Result<Duration> {
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..RUNNER_CALLS {
                let out = runner
                    .kubectl(&["get", "pods"], None, Duration::from_secs(30))
                    .await?;
                ensure!(out.code == 0, "kubectl failed: {}", out.stderr);
            }
            Ok(())
        })?;
        Ok(started.elapsed())
    };
    let fresh = time(&flyte_runner_proxy::Runner::new(config.clone()))?;
    let shared_runner = flyte_runner_proxy::Runner::shared(config)?;
    let shared = time(&shared_runner)?;
    drop(shared_runner);
    println!(
        "fresh: {:.2} s ({:.0} ms a call); shared: {:.2} s ({:.0} ms a call); shared is {:.1}x faster (target >= 5x)",
        fresh.as_secs_f64(),
        fresh.as_secs_f64() * 1000.0 / f64::from(RUNNER_CALLS),
        shared.as_secs_f64(),
        shared.as_secs_f64() * 1000.0 / f64::from(RUNNER_CALLS),
        fresh.as_secs_f64() / shared.as_secs_f64()
    );
    Ok(())
}

/// User plus system CPU time of this process (`children`: of its waited-for descendants).
fn cpu_time(children: bool) -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(if children {
        UsageWho::RUSAGE_CHILDREN
    } else {
        UsageWho::RUSAGE_SELF
    })?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

/// OpenSSH's sshd behind our bridge, on its own runtime, with a cuttable proxy in front.
struct BridgedSshd {
    sshd: Sshd,
    bridge: std::net::SocketAddr,
    proxy: flyte_testkit::CutProxy,
    _runtime: tokio::runtime::Runtime,
}

impl BridgedSshd {
    fn start() -> anyhow::Result<Self> {
        let sshd = Sshd::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let bridge = listener.local_addr()?;
        let config = flyte_tunnel::bridge::BridgeConfig::new(flyte_tunnel::bridge::Target::Tcp(
            ([127, 0, 0, 1], sshd.port()).into(),
        ));
        runtime.spawn(flyte_tunnel::bridge::serve(
            listener,
            std::sync::Arc::new(config),
        ));
        Ok(Self {
            sshd,
            bridge,
            proxy: flyte_testkit::CutProxy::start(bridge),
            _runtime: runtime,
        })
    }

    /// `ssh` straight to sshd (`tunnel: None`), or through `flyte-run tunnel` with these extra
    /// arguments and the bridge (behind the cuttable proxy with `via_proxy`).
    fn ssh(&self, bin: &Path, tunnel: Option<&str>, via_proxy: bool, cipher: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(self.sshd.client_config());
        cmd.args(["-c", cipher]);
        if let Some(extra) = tunnel {
            cmd.args([
                "-o",
                &format!(
                    "ProxyCommand={} tunnel {extra} ws://{}/",
                    bin.display(),
                    if via_proxy {
                        self.proxy.addr()
                    } else {
                        self.bridge
                    }
                ),
            ]);
        }
        cmd.arg(self.sshd.alias());
        cmd
    }
}

const CIPHERS: [&str; 2] = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"];
const RESUME_RUNS: usize = 7;

/// Sessions that survive (issue 18): the tunnel's own cost against ssh straight to the same
/// sshd, for both ciphers and directions; throughput through repeated cuts; and how soon a
/// session carries bytes again once the network is back.
fn resume() -> anyhow::Result<()> {
    println!(
        "== Resumable tunnel: ssh through flyte-run tunnel + bridge vs ssh straight to the same sshd, loopback"
    );
    let bin = build_release_flyte_run()?;
    let path = BridgedSshd::start()?;
    let home = TempHome::new();
    let zeros = home.path().join("zeros");
    File::create(&zeros)?.set_len(TRANSFER_BYTES)?;
    let download = format!("head -c {TRANSFER_BYTES} /dev/zero");
    resume_throughput(&path, &bin, &zeros, &download)?;
    resume_through_cuts(&path, &bin, &download)?;
    resume_latency(&path, &bin)
}

/// Both ciphers, both directions: ssh straight to sshd, through the resumable tunnel, and
/// through the tunnel without resumption; and the CPU each spends.
fn resume_throughput(
    path: &BridgedSshd,
    bin: &Path,
    zeros: &Path,
    download: &str,
) -> anyhow::Result<()> {
    let upload = "cat > /dev/null";

    println!(
        "\n| work | cipher | ssh direct (median) | through the tunnel, resumable | ratio | without resumption | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    // CPU seconds per run: the ssh process tree (ssh, and the tunnel it starts) and this
    // process (the bridge runs here); sshd is the same in all three and not counted.
    let mut cpu = [(Duration::ZERO, Duration::ZERO); 3];
    let mut cpu_runs = 0u32;
    for cipher in CIPHERS {
        for (name, remote, stdin_file) in [
            ("download 256 MiB", download, false),
            ("upload 256 MiB", upload, true),
        ] {
            let mut samples: [Vec<Duration>; 3] = Default::default();
            for _ in 0..TRANSFER_RUNS {
                for (i, tunnel) in [None, Some(""), Some("--no-resume")]
                    .into_iter()
                    .enumerate()
                {
                    let mut cmd = path.ssh(bin, tunnel, false, cipher);
                    cmd.arg(remote).stdin(if stdin_file {
                        Stdio::from(File::open(zeros)?)
                    } else {
                        Stdio::null()
                    });
                    let (children, own) = (cpu_time(true)?, cpu_time(false)?);
                    samples[i].push(time_once(&mut cmd, true)?);
                    cpu[i].0 += cpu_time(true)?.saturating_sub(children);
                    cpu[i].1 += cpu_time(false)?.saturating_sub(own);
                }
                cpu_runs += 1;
            }
            let [direct, resumable, plain] = samples.map(median);
            println!(
                "| {name} | {cipher} | {:.3} s | {:.3} s | {:.2}x throughput | {:.3} s | {:.2}x throughput |",
                direct.as_secs_f64(),
                resumable.as_secs_f64(),
                direct.as_secs_f64() / resumable.as_secs_f64(),
                plain.as_secs_f64(),
                direct.as_secs_f64() / plain.as_secs_f64(),
            );
        }
    }
    println!(
        "\n| CPU per 256 MiB (mean of all runs above) | ssh (+ tunnel) | bridge |\n|---|---|---|"
    );
    for (name, (tree, bridge)) in [
        "ssh direct",
        "through the tunnel, resumable",
        "without resumption",
    ]
    .into_iter()
    .zip(cpu)
    {
        println!(
            "| {name} | {:.3} s | {:.3} s |",
            tree.as_secs_f64() / f64::from(cpu_runs),
            bridge.as_secs_f64() / f64::from(cpu_runs)
        );
    }

    Ok(())
}

/// The download through the proxy, with and without a cut every 32 MiB.
fn resume_through_cuts(path: &BridgedSshd, bin: &Path, download: &str) -> anyhow::Result<()> {
    // Throughput through cuts: the same download through the proxy, cut after every 32 MiB
    // (both figures through the proxy, so its own copying cost is in both).
    let cipher = CIPHERS[0];
    let mut clean = Vec::new();
    let mut cut = Vec::new();
    for _ in 0..3 {
        clean.push(time_once(
            path.ssh(bin, Some(""), true, cipher)
                .arg(download)
                .stdin(Stdio::null()),
            true,
        )?);
        let mut child = path
            .ssh(bin, Some(""), true, cipher)
            .arg(download)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        let mut mark = path.proxy.forwarded();
        for _ in 0..7 {
            mark += 32 * 1024 * 1024;
            path.proxy
                .wait_until("32 MiB more", Duration::from_mins(2), |_, bytes| {
                    bytes >= mark
                });
            path.proxy.cut();
        }
        ensure!(child.wait()?.success(), "the download through cuts failed");
        cut.push(started.elapsed());
    }
    let (clean, cut) = (median(clean), median(cut));
    println!(
        "\n| download 256 MiB through the tunnel | no cut | 7 cuts (every 32 MiB) | ratio |\n|---|---|---|---|\n| {cipher} | {:.3} s | {:.3} s | {:.2}x throughput |",
        clean.as_secs_f64(),
        cut.as_secs_f64(),
        clean.as_secs_f64() / cut.as_secs_f64()
    );

    Ok(())
}

/// How soon a typed line comes back after an outage ends.
fn resume_latency(path: &BridgedSshd, bin: &Path) -> anyhow::Result<()> {
    let cipher = CIPHERS[0];
    // Time to resume: a line echoed by the remote shell, timed from the moment the network is
    // back (a cut, so at once; a freeze long enough for the tunnel to declare the link dead,
    // then a thaw) to the echo.
    let mut child = path
        .ssh(bin, Some(""), true, cipher)
        .arg("while read line; do echo \"$line\"; done")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut keyboard = child.stdin.take().context("stdin")?;
    let mut screen = BufReader::new(child.stdout.take().context("stdout")?);
    let mut echo = |n: usize| -> anyhow::Result<Duration> {
        use std::io::Write as _;
        let started = Instant::now();
        writeln!(keyboard, "line {n}")?;
        keyboard.flush()?;
        let mut line = String::new();
        screen.read_line(&mut line)?;
        ensure!(line.trim() == format!("line {n}"), "echoed {line:?}");
        Ok(started.elapsed())
    };
    echo(0)?;
    let (mut idle, mut after_cut, mut after_freeze) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..RESUME_RUNS {
        idle.push(echo(n * 3 + 1)?);
        path.proxy.cut();
        after_cut.push(echo(n * 3 + 2)?);
        let before = path.proxy.accepted();
        path.proxy.freeze();
        path.proxy
            .wait_until("a reconnection", Duration::from_mins(1), |accepted, _| {
                accepted > before
            });
        path.proxy.thaw();
        after_freeze.push(echo(n * 3 + 3)?);
    }
    drop(keyboard);
    let _ = child.wait();
    println!("\n| round trip of a typed line | median | max |\n|---|---|---|");
    for (name, samples) in [
        ("no outage", idle),
        ("right after a cut (network back at once)", after_cut),
        (
            "right after a freeze ends (link declared dead, reconnection pending)",
            after_freeze,
        ),
    ] {
        let max = samples.iter().max().copied().unwrap_or_default();
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            median(samples).as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
