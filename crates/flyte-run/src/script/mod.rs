//! The Rhai host: one engine factory, one file per script module, and the one place where Rust
//! errors become script errors (see [`ScriptError`] and [`opts`]).
//!
//! Library crates know nothing of Rhai; each module here adapts one crate to the script contract
//! in DESIGN.md ("The Rhai surface").

mod apps;
mod auth;
mod debug;
mod git;
mod keys;
mod kservice;
mod opts;
pub(crate) mod reference;
mod runner;
mod runs;
mod ssh;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::context::{AppContext, MAX_WAIT};
use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position, Scope};

/// What scripts may reach of the outside world, captured by the module functions: the
/// application context (home, endpoint, dry-run, deadline, runtime), plus what only scripts
/// have.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) app: AppContext,
    /// `--set KEY=VALUE` pairs, typed.
    pub(crate) args: Map,
    /// CPU time the script may compute for (`--cpu-limit`).
    pub(crate) cpu_limit: Duration,
}

impl Host {
    pub(crate) fn new(app: AppContext) -> Self {
        Self {
            app,
            args: Map::new(),
            cpu_limit: limits::CPU_BUDGET,
        }
    }
}

/// Script modules read the application context through their `Host`.
impl std::ops::Deref for Host {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.app
    }
}

/// Where a script comes from; it decides the name in error messages and where `import` looks.
#[derive(Debug, Clone)]
pub(crate) enum ScriptSource {
    File(PathBuf),
    Inline(String),
}

impl ScriptSource {
    fn label(&self) -> String {
        match self {
            ScriptSource::File(path) => path.display().to_string(),
            ScriptSource::Inline(_) => "<-e>".to_owned(),
        }
    }
}

/// Limits set explicitly so debug and release builds behave the same (Rhai's defaults differ
/// between them). Sized for playbooks, which are short and spend their time waiting on I/O.
mod limits {
    pub(super) const MAX_OPERATIONS: u64 = 50_000_000;
    pub(super) const MAX_CALL_LEVELS: usize = 64;
    pub(super) const MAX_EXPR_DEPTH: usize = 64;
    pub(super) const MAX_FUNCTION_EXPR_DEPTH: usize = 32;
    /// Command output (kubectl -o json) can be large; 16 MiB is plenty and still bounded.
    pub(super) const MAX_STRING_SIZE: usize = 16 * 1024 * 1024;
    pub(super) const MAX_ARRAY_SIZE: usize = 1_000_000;
    pub(super) const MAX_MAP_SIZE: usize = 100_000;
    pub(super) const MAX_MODULES: usize = 64;
    /// Memory a script may hold in all (every string, array and map at once, across call
    /// levels): each value's own limit above does not bound their sum.
    pub(super) const MEMORY_BUDGET: usize = 512 * 1024 * 1024;
    /// CPU time the script's own thread may spend computing by default (`--cpu-limit`).
    /// Waiting (`runs::wait`, `sleep`, a remote command) costs none, so only a script that
    /// computes without end reaches it; the operations limit cannot catch every such loop,
    /// since one operation can be slow (Rhai measures a growing array on each push).
    pub(super) const CPU_BUDGET: std::time::Duration = std::time::Duration::from_mins(2);
    /// How often (in operations) the CPU clock is read; memory is checked every operation.
    pub(super) const CPU_CHECK_EVERY: u64 = 4096;
}

/// Why the engine stopped a script, as the token `on_progress` returns.
const STOP_TIMEOUT: &str = "timeout";
const STOP_MEMORY: &str = "memory";
const STOP_CPU: &str = "cpu";

/// CPU time used by the calling thread so far.
fn thread_cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |usage| {
        let user = usage.user_time();
        let system = usage.system_time();
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        micros(user) + micros(system)
    })
}

/// A script failed: where, and why.
#[derive(Debug)]
pub(crate) struct ScriptError {
    source: String,
    position: Position,
    message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.position.line(), self.position.position()) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.source, self.message),
            (Some(line), None) => write!(f, "{}:{line}: {}", self.source, self.message),
            _ => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl ScriptError {
    fn new(source: &ScriptSource, mut err: EvalAltResult, timeout: Option<Duration>) -> Self {
        let position = err.take_position();
        // An error inside a script function (an imported module's, or the playbook's own) is
        // reported at the outermost call site, with where inside the function it happened.
        let mut inside = Vec::new();
        loop {
            match err {
                EvalAltResult::ErrorInFunctionCall(name, module, inner, at) => {
                    let name = if module.is_empty() {
                        name
                    } else {
                        format!("{module}::{name}")
                    };
                    inside.push(format!(
                        "{name}, {}",
                        describe(if inner.position().is_none() {
                            at
                        } else {
                            inner.position()
                        })
                    ));
                    err = *inner;
                }
                EvalAltResult::ErrorInModule(name, inner, _) => {
                    inside.push(format!("module {name:?}, {}", describe(inner.position())));
                    err = *inner;
                }
                _ => break,
            }
        }
        let message = match &err {
            EvalAltResult::ErrorTerminated(token, ..) if token.to_string() == STOP_MEMORY => {
                format!(
                    "the script held more than {} MiB of memory and was stopped",
                    limits::MEMORY_BUDGET / (1024 * 1024)
                )
            }
            EvalAltResult::ErrorTerminated(token, ..) if token.to_string() == STOP_CPU => {
                "the script computed for longer than --cpu-limit (an endless loop?) and was stopped"
                    .to_owned()
            }
            EvalAltResult::ErrorTerminated(..) => format!(
                "the script ran longer than --timeout {} s and was stopped",
                timeout.unwrap_or_default().as_secs_f64()
            ),
            EvalAltResult::ErrorTooManyOperations(..) => format!(
                "the script ran more than {} operations (an endless loop?) and was stopped",
                limits::MAX_OPERATIONS
            ),
            // A Rust error raised by a module function: its message is the whole story.
            EvalAltResult::ErrorRuntime(value, ..) if value.is_string() => value.to_string(),
            other => {
                let mut text = other.to_string();
                // Rhai appends the position it already gave us; say it once, our way.
                if let Some(i) = text.rfind(" (line ") {
                    text.truncate(i);
                }
                text
            }
        };
        let message = if inside.is_empty() {
            message
        } else {
            format!("{message} (in {})", inside.join(", in "))
        };
        Self {
            source: source.label(),
            position,
            message,
        }
    }
}

fn describe(position: Position) -> String {
    match (position.line(), position.position()) {
        (Some(line), Some(col)) => format!("line {line}:{col}"),
        (Some(line), None) => format!("line {line}"),
        _ => "at an unknown line".to_owned(),
    }
}

/// The engine every script runs in, with the contract's modules registered.
pub(crate) fn new_engine(host: &Arc<Host>, source: &ScriptSource) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits::MAX_OPERATIONS)
        .set_max_call_levels(limits::MAX_CALL_LEVELS)
        .set_max_expr_depths(limits::MAX_EXPR_DEPTH, limits::MAX_FUNCTION_EXPR_DEPTH)
        .set_max_string_size(limits::MAX_STRING_SIZE)
        .set_max_array_size(limits::MAX_ARRAY_SIZE)
        .set_max_map_size(limits::MAX_MAP_SIZE)
        .set_max_modules(limits::MAX_MODULES)
        .set_strict_variables(true)
        // `eval` would run text the playbook author never saw with the playbook's powers.
        .disable_symbol("eval");

    let timeout = host.timeout;
    let cpu_limit = host.cpu_limit;
    let started = host.started;
    let cpu_at_start = thread_cpu_time();
    engine.on_progress(move |operations| {
        if crate::allocated_bytes() > limits::MEMORY_BUDGET {
            return Some(Dynamic::from(STOP_MEMORY));
        }
        if operations % limits::CPU_CHECK_EVERY == 0
            && thread_cpu_time().saturating_sub(cpu_at_start) > cpu_limit
        {
            return Some(Dynamic::from(STOP_CPU));
        }
        timeout
            .is_some_and(|t| started.elapsed() > t)
            .then(|| Dynamic::from(STOP_TIMEOUT))
    });

    // `debug` is a reserved word in Rhai (its `debug(x)` statement); the contract's module is
    // `debug::`, so the word is handed to the parser as a plain name. The API is marked volatile
    // (not deprecated) by Rhai; the CLI tests catch a change.
    #[allow(deprecated)]
    engine.on_parse_token(|token, _, _| match token {
        rhai::Token::Reserved(word) if word.as_str() == "debug" => rhai::Token::Identifier(word),
        other => other,
    });
    engine.set_module_resolver(module_resolver(source));
    engine.register_static_module("keys", keys::module(host).into());
    engine.register_static_module("kservice", kservice::module().into());
    engine.register_static_module("ssh", ssh::module(host).into());
    auth::register_types(&mut engine);
    engine.register_static_module("auth", auth::module(host).into());
    engine.register_static_module("runs", runs::module(host).into());
    engine.register_static_module("debug", debug::module(host).into());
    engine.register_static_module("runner", runner::module(host).into());
    engine.register_static_module("git", git::module(host).into());
    engine.register_static_module("apps", apps::module(host).into());
    // sleep(seconds): for backoff in scripts; bounded by --timeout like everything else.
    let h = Arc::clone(host);
    engine.register_fn(
        "sleep",
        move |ctx: NativeCallContext<'_>, seconds: rhai::FLOAT| -> opts::ScriptResult<()> {
            if !(seconds.is_finite() && (0.0..=3600.0).contains(&seconds)) {
                return Err(opts::script_err(
                    &ctx,
                    format!("sleep: {seconds} is not 0 to 3600 seconds"),
                ));
            }
            std::thread::sleep(h.bound(Duration::from_secs_f64(seconds)));
            Ok(())
        },
    );
    let h = Arc::clone(host);
    engine.register_fn(
        "sleep",
        move |ctx: NativeCallContext<'_>, seconds: rhai::INT| -> opts::ScriptResult<()> {
            if !(0..=3600).contains(&seconds) {
                return Err(opts::script_err(
                    &ctx,
                    format!("sleep: {seconds} is not 0 to 3600 seconds"),
                ));
            }
            std::thread::sleep(h.bound(Duration::from_secs(seconds.unsigned_abs())));
            Ok(())
        },
    );
    engine.register_fn("env", |name: &str| -> Dynamic {
        crate::env_vars::get(name).map_or(Dynamic::UNIT, Dynamic::from)
    });
    engine
}

/// `import "name"` looks beside the playbook, then in `scripts/` next to the playbook's folder,
/// then in `./scripts`.
fn module_resolver(source: &ScriptSource) -> ModuleResolversCollection {
    let mut resolvers = ModuleResolversCollection::new();
    let mut dirs = Vec::new();
    if let ScriptSource::File(path) = source {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dirs.push(dir.to_owned());
        dirs.push(dir.join("..").join("scripts"));
    }
    dirs.push(PathBuf::from("scripts"));
    for dir in dirs {
        resolvers.push(FileModuleResolver::new_with_path(dir));
    }
    resolvers
}

/// Run a script to completion and return its value.
pub(crate) fn run(host: &Arc<Host>, source: &ScriptSource) -> Result<Dynamic, ScriptError> {
    let text = match source {
        ScriptSource::File(path) => std::fs::read_to_string(path).map_err(|e| ScriptError {
            source: source.label(),
            position: Position::NONE,
            message: format!("cannot read the playbook: {e}"),
        })?,
        ScriptSource::Inline(text) => text.clone(),
    };
    let engine = new_engine(host, source);
    let mut scope = Scope::new();
    scope.push_constant("args", host.args.clone());
    let wrap = |e: Box<EvalAltResult>| ScriptError::new(source, *e, host.timeout);
    let ast = engine
        .compile_with_scope(&scope, &text)
        .map_err(|e| wrap(e.into()))?;
    engine
        .eval_ast_with_scope::<Dynamic>(&mut scope, &ast)
        .map_err(wrap)
}

/// Parse a `--set` value: integer, float, boolean, else the string itself.
pub(crate) fn typed_value(raw: &str) -> Dynamic {
    if let Ok(i) = raw.parse::<rhai::INT>() {
        return Dynamic::from(i);
    }
    if let Ok(f) = raw.parse::<rhai::FLOAT>()
        && f.is_finite()
        && raw.bytes().any(|b| b.is_ascii_digit())
    {
        return Dynamic::from(f);
    }
    match raw {
        "true" => Dynamic::TRUE,
        "false" => Dynamic::FALSE,
        _ => Dynamic::from(raw.to_owned()),
    }
}

/// How `-e` prints a result: strings as they are, everything else as JSON.
pub(crate) fn display_value(value: &Dynamic) -> Result<String, serde_json::Error> {
    if value.is_string() {
        return Ok(value.to_string());
    }
    serde_json::to_string_pretty(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_typed() {
        for (raw, want) in [
            ("42", "i64:42"),
            ("-7", "i64:-7"),
            ("1.5", "f64:1.5"),
            ("true", "bool:true"),
            ("false", "bool:false"),
            ("nan", "string:nan"),
            ("inf", "string:inf"),
            ("", "string:"),
            ("hello world", "string:hello world"),
        ] {
            let v = typed_value(raw);
            assert_eq!(format!("{}:{v}", v.type_name()), want, "{raw:?}");
        }
    }
}
