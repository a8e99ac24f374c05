//! What could make ssh apply options other than ours to a managed alias (pure).
//!
//! ssh takes the first value it reads for each option, reading the file top to bottom (and an
//! `Include` in place). So a managed block is only in charge of its alias when nothing before it
//! can apply: no `Host` line whose patterns match the alias, no `Match`, no `Include`. After it,
//! an unmanaged `Host <alias>` block is merged in for every option ours does not set
//! (`ForwardAgent`, `RemoteCommand`, `LocalForward`, ...). `doctor` reports both; install refuses
//! the second and places new blocks so the first cannot happen, but a user can still edit the
//! file afterwards.

use std::fmt;

use crate::Result;
use crate::managed::{ManagedBlock, managed_blocks};
use crate::model::{Config, LineKind};

/// Why a line can change what ssh does for a managed alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowKind {
    /// A `Host` line before the block with a pattern matching the alias.
    HostBefore { patterns: Vec<String> },
    /// A `Match` line before the block (its criteria may hold for the alias).
    MatchBefore,
    /// An `Include` before the block (the included files may hold `Host *`).
    IncludeBefore,
    /// An unmanaged `Host` block naming the alias exactly: merged into ours.
    UnmanagedBlock,
    /// A global option (before any `Host`/`Match`) that the block also sets: ssh takes the
    /// first value, so the global one wins (`StrictHostKeyChecking no` undoes pinning).
    GlobalOption { keyword: String },
}

/// One problem: the alias, the 1-based line that causes it, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowing {
    pub alias: String,
    pub line: usize,
    pub kind: ShadowKind,
}

impl fmt::Display for Shadowing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { alias, line, kind } = self;
        match kind {
            ShadowKind::HostBefore { patterns } => write!(
                f,
                "line {line} (`Host {}`) comes before the managed block for {alias:?} and matches it, \
                 so its options win; move the managed block above it",
                patterns.join(" ")
            ),
            ShadowKind::MatchBefore => write!(
                f,
                "line {line} (`Match`) comes before the managed block for {alias:?} and may apply \
                 to it; move the managed block above it"
            ),
            ShadowKind::IncludeBefore => write!(
                f,
                "line {line} (`Include`) comes before the managed block for {alias:?}; an included \
                 `Host *` would win. Move the managed block above it"
            ),
            ShadowKind::GlobalOption { keyword } => write!(
                f,
                "line {line} sets `{keyword}` for every host before the managed block for \
                 {alias:?}, so it wins over the block's own `{keyword}`; move it into a \
                 `Host *` block at the end of the file"
            ),
            ShadowKind::UnmanagedBlock => write!(
                f,
                "line {line} has a `Host` block for {alias:?} that flyte-run does not manage; ssh \
                 merges its options into the debug connection. Remove or rename it"
            ),
        }
    }
}

/// Every line that can override or add to a managed block's options, in file order per block.
pub fn shadowing(config: &Config) -> Result<Vec<Shadowing>> {
    let blocks = managed_blocks(config)?;
    let inside = |i: usize| blocks.iter().any(|b| (b.begin..=b.end).contains(&i));
    let mut found = Vec::new();
    for block in &blocks {
        let ManagedBlock { alias, begin, end } = block;
        let own: Vec<&str> = config.lines[*begin..=*end]
            .iter()
            .filter_map(|l| match &l.kind {
                LineKind::Option { keyword, .. } => Some(keyword.as_str()),
                _ => None,
            })
            .collect();
        let global_until = config.first_block_header().unwrap_or(config.lines.len());
        for (i, line) in config.lines.iter().enumerate() {
            if inside(i) {
                continue;
            }
            let kind = match &line.kind {
                LineKind::Host(patterns) if names_alias(patterns, alias) => {
                    Some(ShadowKind::UnmanagedBlock)
                }
                LineKind::Host(patterns) if i < *begin && host_matches(patterns, alias) => {
                    Some(ShadowKind::HostBefore {
                        patterns: patterns.clone(),
                    })
                }
                LineKind::Match(_) if i < *begin => Some(ShadowKind::MatchBefore),
                LineKind::Option { keyword, .. }
                    if i < *begin && keyword.eq_ignore_ascii_case("include") =>
                {
                    Some(ShadowKind::IncludeBefore)
                }
                LineKind::Option { keyword, .. }
                    if i < *begin
                        && i < global_until
                        && own.iter().any(|k| k.eq_ignore_ascii_case(keyword)) =>
                {
                    Some(ShadowKind::GlobalOption {
                        keyword: keyword.clone(),
                    })
                }
                _ => None,
            };
            if let Some(kind) = kind {
                found.push(Shadowing {
                    alias: alias.clone(),
                    line: i + 1,
                    kind,
                });
            }
        }
    }
    Ok(found)
}

/// Whether a `Host` line is a block for `alias` itself: it names the alias literally and applies
/// to it (`Host !dbg dbg` names it but never applies).
pub(crate) fn names_alias(patterns: &[String], alias: &str) -> bool {
    patterns.iter().any(|p| p == alias) && host_matches(patterns, alias)
}

/// OpenSSH's `Host` rule: some pattern matches and no negated (`!`) pattern does.
fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated.as_bytes(), host.as_bytes()) {
                return false;
            }
        } else if glob(pattern.as_bytes(), host.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` and `?` wildcards. Case matters: ssh matches `Host` patterns against the name as typed
/// (OpenSSH 9.2: `Host FLYTE-DEBUG` applies to `ssh FLYTE-DEBUG`, not to `ssh flyte-debug`).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_follow_openssh() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "flyte-debug", true),
            (&["flyte-*"], "flyte-debug", true),
            (&["FLYTE-DEBUG"], "flyte-debug", false),
            (&["F*"], "flyte-debug", false),
            (&["flyte-debu?"], "flyte-debug", true),
            (&["flyte-debu?"], "flyte-debugx", false),
            (&["*", "!flyte-*"], "flyte-debug", false),
            (&["other"], "flyte-debug", false),
            (&["!flyte-debug"], "flyte-debug", false),
        ];
        for (patterns, host, expected) in cases {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(
                host_matches(&patterns, host),
                *expected,
                "{patterns:?} vs {host}"
            );
        }
    }
}
