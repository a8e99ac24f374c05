//! Typed access to an optional options map (`opts` in the contract), with errors that name the
//! function and the option. Unknown keys are an error, so a typo never silently does nothing.

// Rhai passes errors as `Box<EvalAltResult>` everywhere; boxing here matches its API.
#![allow(clippy::unnecessary_box_returns)]

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};

pub(crate) type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// Turn any library error into a script error carrying its message and the call site.
///
/// Rhai does not fill in the position of errors raised by functions called through a module path
/// (`keys::...`), so every module function takes its `NativeCallContext` and passes it here.
pub(crate) fn script_err(
    ctx: &NativeCallContext<'_>,
    err: impl std::fmt::Display,
) -> Box<EvalAltResult> {
    error_at(ctx.call_position(), err)
}

fn error_at(position: Position, err: impl std::fmt::Display) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        err.to_string().into(),
        position,
    ))
}

/// The strings of a script array, or an error naming the function and what the items are
/// (`"{func}: {what} must be strings, not {type}"`).
pub(crate) fn string_array(
    ctx: &NativeCallContext<'_>,
    func: &str,
    what: &str,
    array: rhai::Array,
) -> ScriptResult<Vec<String>> {
    array
        .into_iter()
        .map(|v| {
            v.into_string()
                .map_err(|t| script_err(ctx, format!("{func}: {what} must be strings, not {t}")))
        })
        .collect()
}

/// A module function's registration with what the editor definitions and the reference page
/// show: `signature` lists the parameters (`"run: String"`) and, last, the return type; `doc`
/// is plain lines (the `///` are added here).
pub(crate) fn documented(name: &str, signature: &[&str], doc: &str) -> rhai::FuncRegistration {
    let comment = doc
        .lines()
        .map(|line| format!("/// {line}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    // What `Module::set_native_fn` sets, plus the metadata.
    rhai::FuncRegistration::new(name)
        .with_namespace(rhai::FnNamespace::Internal)
        .with_purity(true)
        .with_volatility(false)
        .with_params_info(signature)
        .with_comments([comment])
}

pub(crate) struct Opts<'a> {
    func: &'static str,
    map: &'a Map,
    position: Position,
}

impl<'a> Opts<'a> {
    pub(crate) fn new(
        ctx: &NativeCallContext<'_>,
        func: &'static str,
        map: &'a Map,
        known: &[&str],
    ) -> ScriptResult<Self> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(script_err(
                ctx,
                format!(
                    "{func}: unknown option `{unknown}`; known options: {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(Self {
            func,
            map,
            position: ctx.call_position(),
        })
    }

    fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Dynamic) -> Box<EvalAltResult> {
        error_at(
            self.position,
            format!(
                "{}: option `{key}` must be {want}, not {}",
                self.func,
                got.type_name()
            ),
        )
    }

    pub(crate) fn string(&self, key: &str) -> ScriptResult<Option<String>> {
        self.get(key)
            .map(|v| {
                v.clone()
                    .into_string()
                    .map_err(|_| self.wrong_type(key, "a string", v))
            })
            .transpose()
    }

    pub(crate) fn bool(&self, key: &str) -> ScriptResult<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .map_err(|_| self.wrong_type(key, "a boolean", v))
            })
            .transpose()
    }

    pub(crate) fn int(&self, key: &str) -> ScriptResult<Option<rhai::INT>> {
        self.get(key)
            .map(|v| {
                v.as_int()
                    .map_err(|_| self.wrong_type(key, "an integer", v))
            })
            .transpose()
    }

    /// An integer option that must fit `T` (ports, counts).
    pub(crate) fn int_as<T: TryFrom<rhai::INT>>(
        &self,
        key: &str,
        what: &str,
    ) -> ScriptResult<Option<T>> {
        self.int(key)?
            .map(|i| {
                T::try_from(i).map_err(|_| {
                    error_at(
                        self.position,
                        format!("{}: option `{key}` = {i} is not {what}", self.func),
                    )
                })
            })
            .transpose()
    }

    /// A number of seconds, at most a week (`MAX_WAIT`).
    pub(crate) fn seconds(&self, key: &str) -> ScriptResult<Option<std::time::Duration>> {
        let Some(secs) = self.int_as::<u64>(key, "a number of seconds")? else {
            return Ok(None);
        };
        let wait = std::time::Duration::from_secs(secs);
        if wait > super::MAX_WAIT {
            return Err(error_at(
                self.position,
                format!(
                    "{}: option `{key}` = {secs} s is more than a week ({} s)",
                    self.func,
                    super::MAX_WAIT.as_secs()
                ),
            ));
        }
        Ok(Some(wait))
    }

    /// A path; a leading `~/` means the home directory, as in a shell.
    pub(crate) fn path(
        &self,
        key: &str,
        home: &std::path::Path,
    ) -> ScriptResult<Option<std::path::PathBuf>> {
        Ok(self.string(key)?.map(|p| match p.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None if p == "~" => home.to_owned(),
            None => std::path::PathBuf::from(p),
        }))
    }
}
