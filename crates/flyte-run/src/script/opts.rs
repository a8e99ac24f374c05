//! The declarative half of the script surface: a function's options map is read into a serde
//! struct (unknown keys refused, a wrong type named with its option) and its result is a serde
//! struct turned into a map, both through rhai's serde support. Errors name the function.

// Rhai passes errors as `Box<EvalAltResult>` everywhere; boxing here matches its API.
#![allow(clippy::unnecessary_box_returns)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

pub(crate) type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// Turn any library error into a script error carrying its message and the call site.
///
/// Rhai does not fill in the position of errors raised by functions called through a module path
/// (`keys::...`), so every module function takes its `NativeCallContext` and passes it here.
pub(crate) fn script_err(
    ctx: &NativeCallContext<'_>,
    err: impl std::fmt::Display,
) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        err.to_string().into(),
        ctx.call_position(),
    ))
}

/// The strings of a script array given as an argument, or an error naming the function and what
/// the items are (`"{func}: {what} must be strings, not {type}"`).
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

/// Register `prefix::name(args…, opts: Map)` and `prefix::name(args…)` (the same with `#{}`) in
/// the module `prefix` from one closure taking `(&NativeCallContext, args…, &Map)`; both are
/// documented.
macro_rules! with_options {
    ($module:expr, $prefix:literal, $name:literal, ($($arg:ident: $ty:ty => $sig:literal),*) -> $ret:literal,
     $doc:expr, $body:expr $(,)?) => {{
        let body = ::std::sync::Arc::new($body);
        let without = ::std::sync::Arc::clone(&body);
        $crate::script::opts::documented($name, &[$($sig,)* "opts: Map", $ret], $doc)
            .set_into_module(
                $module,
                move |ctx: ::rhai::NativeCallContext<'_>, $($arg: $ty,)* opts: ::rhai::Map| {
                    body(&ctx, $($arg,)* &opts)
                },
            );
        $crate::script::opts::documented(
            $name,
            &[$($sig,)* $ret],
            concat!("`", $prefix, "::", $name, "(", $(stringify!($arg), ", ",)* "#{})`."),
        )
        .set_into_module(
            $module,
            move |ctx: ::rhai::NativeCallContext<'_>, $($arg: $ty),*| {
                without(&ctx, $($arg,)* &::rhai::Map::new())
            },
        );
    }};
}
pub(crate) use with_options;

/// Read `func`'s options map into `T`. A key `T` does not have is refused with the list of the
/// ones it has (a typo never silently does nothing); a `()` value means "not given".
pub(crate) fn options<T: DeserializeOwned>(
    ctx: &NativeCallContext<'_>,
    func: &str,
    map: &Map,
) -> ScriptResult<T> {
    from_map(func, map).map_err(|message| script_err(ctx, message))
}

/// [`options`] without the call site, for the table tests.
fn from_map<T: DeserializeOwned>(func: &str, map: &Map) -> Result<T, String> {
    let known = serde_aux::serde_introspection::serde_introspect::<T>();
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "{func}: unknown option `{unknown}`; known options: {}",
            known.join(", ")
        ));
    }
    let given: Map = map
        .iter()
        .filter(|(_, v)| !v.is_unit())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let value = Dynamic::from_map(given);
    serde_path_to_error::deserialize(rhai::serde::DynamicDeserializer::new(&value))
        .map_err(|e| describe(func, &e))
}

/// `option `timeout` must be an integer, not string`: rhai's deserializer reports the two types,
/// `serde_path_to_error` the option (and the item, for arrays and maps).
fn describe(func: &str, err: &serde_path_to_error::Error<Box<EvalAltResult>>) -> String {
    let option = err.path().to_string();
    match err.inner().as_ref() {
        EvalAltResult::ErrorMismatchOutputType(wanted, given, _) => {
            format!(
                "{func}: option `{option}` must be {}, not {given}",
                kind(wanted)
            )
        }
        EvalAltResult::ErrorParsing(
            rhai::ParseErrorType::BadInput(rhai::LexError::ImproperSymbol(_, message)),
            _,
        ) => format!("{func}: option `{option}`: {message}"),
        other => format!("{func}: option `{option}`: {other}"),
    }
}

/// The kind of value a Rust type reads from, as a script writer says it.
fn kind(rust_type: &str) -> &str {
    match rust_type {
        "string" | "String" | "&str" | "str" | "char" | "ImmutableString" => "a string",
        "bool" => "a boolean",
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        t if t.contains("Vec<") || t == "array" => "an array",
        t if t.contains("Map<") || t == "map" => "a map",
        other => other,
    }
}

/// A result struct as the map scripts get (`Option::None` is `()`).
pub(crate) fn to_map<T: Serialize>(ctx: &NativeCallContext<'_>, value: &T) -> ScriptResult<Map> {
    rhai::serde::to_dynamic(value)?
        .try_cast::<Map>()
        .ok_or_else(|| script_err(ctx, "internal: a result did not serialize to a map"))
}

/// A number of seconds, at most a week (`MAX_WAIT`).
pub(crate) fn seconds(
    ctx: &NativeCallContext<'_>,
    func: &str,
    key: &str,
    value: Option<rhai::INT>,
) -> ScriptResult<Option<Duration>> {
    let Some(given) = value else {
        return Ok(None);
    };
    let secs = u64::try_from(given).map_err(|_| {
        script_err(
            ctx,
            format!("{func}: option `{key}` = {given} is not a number of seconds"),
        )
    })?;
    let wait = Duration::from_secs(secs);
    if wait > super::MAX_WAIT {
        return Err(script_err(
            ctx,
            format!(
                "{func}: option `{key}` = {secs} s is more than a week ({} s)",
                super::MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(Some(wait))
}

/// An integer option that must fit `T` (ports, counts); `what` says what it is.
pub(crate) fn int_as<T: TryFrom<rhai::INT>>(
    ctx: &NativeCallContext<'_>,
    func: &str,
    (key, what): (&str, &str),
    value: Option<rhai::INT>,
) -> ScriptResult<Option<T>> {
    value
        .map(|i| {
            T::try_from(i)
                .map_err(|_| script_err(ctx, format!("{func}: option `{key}` = {i} is not {what}")))
        })
        .transpose()
}

/// A path; a leading `~/` means the home directory, as in a shell.
pub(crate) fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_owned(),
        None => PathBuf::from(path),
    }
}

/// A value scripts may give as any scalar (`#{ PORT: 8080 }` in an env map), read as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_char<E>(self, v: char) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One string or an array of strings (`flags: "--depth=1"` or `flags: ["--depth=1"]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Words(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Words;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<Words, E> {
                Ok(Words(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Words, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    words.push(word);
                }
                Ok(Words(words))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Clone, Deserialize, PartialEq, Default)]
    struct Sample {
        name: Option<String>,
        timeout: Option<rhai::INT>,
        check: Option<bool>,
        command: Option<Vec<String>>,
        env: Option<BTreeMap<String, Text>>,
        flags: Option<Words>,
    }

    fn read(script: &str) -> Result<Sample, String> {
        let engine = rhai::Engine::new();
        let map: Map = engine.eval(script).expect("the case is a map literal");
        from_map("f", &map)
    }

    #[test]
    fn options_read_or_are_refused_with_the_option_named() {
        let cases: &[(&str, Result<Sample, &str>)] = &[
            ("#{}", Ok(Sample::default())),
            ("#{ name: () }", Ok(Sample::default())),
            (
                "#{ name: \"a\", timeout: 3, check: true }",
                Ok(Sample {
                    name: Some("a".into()),
                    timeout: Some(3),
                    check: Some(true),
                    ..Sample::default()
                }),
            ),
            (
                "#{ env: #{ PORT: 8080, ON: true, NAME: \"x\" } }",
                Ok(Sample {
                    env: Some(BTreeMap::from([
                        ("NAME".into(), Text("x".into())),
                        ("ON".into(), Text("true".into())),
                        ("PORT".into(), Text("8080".into())),
                    ])),
                    ..Sample::default()
                }),
            ),
            (
                "#{ flags: \"--depth=1\" }",
                Ok(Sample {
                    flags: Some(Words(vec!["--depth=1".into()])),
                    ..Sample::default()
                }),
            ),
            (
                "#{ flags: [\"-q\", \"--depth=1\"] }",
                Ok(Sample {
                    flags: Some(Words(vec!["-q".into(), "--depth=1".into()])),
                    ..Sample::default()
                }),
            ),
            (
                "#{ nmae: \"a\" }",
                Err(
                    "f: unknown option `nmae`; known options: name, timeout, check, command, env, flags",
                ),
            ),
            (
                "#{ name: 1 }",
                Err("f: option `name` must be a string, not i64"),
            ),
            (
                "#{ timeout: \"3\" }",
                Err("f: option `timeout` must be an integer, not string"),
            ),
            (
                "#{ check: \"yes\" }",
                Err("f: option `check` must be a boolean, not string"),
            ),
            (
                "#{ command: \"ls\" }",
                Err("f: option `command` must be an array, not string"),
            ),
            (
                "#{ command: [\"ls\", 1] }",
                Err("f: option `command[1]` must be a string, not i64"),
            ),
            (
                "#{ env: [] }",
                Err("f: option `env` must be a map, not array"),
            ),
            (
                "#{ flags: 3 }",
                Err(
                    "f: option `flags`: invalid type: integer `3`, expected a string or an array of strings",
                ),
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|(script, want)| {
                let got = read(script);
                (got != want.clone().map_err(str::to_owned))
                    .then(|| format!("{script}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
