//! Editing one managed block in a config's text, leaving every other byte alone (pure).
//!
//! A managed block is the lines from `# >>> flyte-run managed: <alias> >>>` to
//! `# <<< flyte-run managed: <alias> <<<`. Install replaces the block in place, or inserts it
//! before the first `Host`/`Match` line or top-level `Include` (so nothing earlier can shadow it:
//! an included file may hold `Host *`), or appends
//! it when the file has no blocks. Remove deletes exactly what install added, so install then
//! remove gives back the original bytes, including a missing final newline.

use crate::model::{Config, Line, LineEnding, LineKind};
use crate::{MarkerProblem, Result, SshConfigError, validate_alias};

const BEGIN_PREFIX: &str = "# >>> flyte-run managed: ";
const BEGIN_SUFFIX: &str = " >>>";
const END_PREFIX: &str = "# <<< flyte-run managed: ";
const END_SUFFIX: &str = " <<<";

/// The comment line that opens the block for `alias`.
pub fn begin_marker(alias: &str) -> String {
    format!("{BEGIN_PREFIX}{alias}{BEGIN_SUFFIX}")
}

/// The comment line that closes the block for `alias`.
pub fn end_marker(alias: &str) -> String {
    format!("{END_PREFIX}{alias}{END_SUFFIX}")
}

enum Marker<'a> {
    Begin(&'a str),
    End(&'a str),
}

fn marker(line: &Line) -> Option<Marker<'_>> {
    if line.kind != LineKind::Comment {
        return None;
    }
    let text = line.text.trim();
    // A marker line that lost its suffix is still ours (and broken), so only the prefix decides.
    if let Some(rest) = text.strip_prefix(BEGIN_PREFIX.trim_end()) {
        return Some(Marker::Begin(
            rest.trim().trim_end_matches(BEGIN_SUFFIX.trim()).trim(),
        ));
    }
    if let Some(rest) = text.strip_prefix(END_PREFIX.trim_end()) {
        return Some(Marker::End(
            rest.trim().trim_end_matches(END_SUFFIX.trim()).trim(),
        ));
    }
    None
}

/// Where one managed block sits: the indices of its marker lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedBlock {
    pub alias: String,
    pub begin: usize,
    pub end: usize,
}

/// All managed blocks, or the first marker problem (1-based line numbers in errors).
pub fn managed_blocks(config: &Config) -> Result<Vec<ManagedBlock>> {
    let problem = |line: usize, problem: MarkerProblem| SshConfigError::Markers {
        line: line + 1,
        problem,
    };
    let mut blocks: Vec<ManagedBlock> = Vec::new();
    let mut open: Option<(String, usize)> = None;
    for (i, line) in config.lines.iter().enumerate() {
        match (marker(line), &open) {
            (None, _) => {}
            (Some(Marker::Begin(alias)), None) => {
                if let Some(first) = blocks.iter().find(|b| b.alias == alias) {
                    return Err(problem(
                        i,
                        MarkerProblem::Duplicated {
                            alias: alias.to_owned(),
                            first_line: first.begin + 1,
                        },
                    ));
                }
                open = Some((alias.to_owned(), i));
            }
            (Some(Marker::Begin(alias)), Some((outer, start))) => {
                return Err(problem(
                    i,
                    MarkerProblem::Nested {
                        inner: alias.to_owned(),
                        outer: outer.clone(),
                        outer_line: start + 1,
                    },
                ));
            }
            (Some(Marker::End(alias)), None) => {
                return Err(problem(
                    i,
                    MarkerProblem::EndWithoutBegin {
                        alias: alias.to_owned(),
                    },
                ));
            }
            (Some(Marker::End(alias)), Some((opened, start))) => {
                if alias != opened {
                    return Err(problem(
                        i,
                        MarkerProblem::Mismatched {
                            begin: opened.clone(),
                            begin_line: start + 1,
                            end: alias.to_owned(),
                        },
                    ));
                }
                blocks.push(ManagedBlock {
                    alias: opened.clone(),
                    begin: *start,
                    end: i,
                });
                open = None;
            }
        }
    }
    if let Some((alias, start)) = open {
        return Err(problem(start, MarkerProblem::BeginWithoutEnd { alias }));
    }
    Ok(blocks)
}

fn comment(text: String, ending: LineEnding) -> Line {
    Line {
        text,
        ending,
        kind: LineKind::Comment,
    }
}

/// Insert or replace the managed block for `alias` with `block_lines` (no endings, no markers).
pub fn install_block(text: &str, alias: &str, block_lines: &[String]) -> Result<String> {
    validate_alias(alias)?;
    let mut config = Config::parse(text);
    let blocks = managed_blocks(&config)?;
    // An unmanaged block for the same alias would be merged by ssh into ours: refuse.
    if let Some(line) = config.lines.iter().enumerate().position(|(i, l)| {
        matches!(&l.kind, LineKind::Host(patterns) if crate::audit::names_alias(patterns, alias))
            && !blocks.iter().any(|b| (b.begin..=b.end).contains(&i))
    }) {
        return Err(SshConfigError::AliasTaken {
            alias: alias.to_owned(),
            line: line + 1,
        });
    }
    let ending = config.dominant_ending();
    let build = |last_ending: LineEnding| -> Vec<Line> {
        let mut lines = vec![comment(begin_marker(alias), ending)];
        lines.extend(block_lines.iter().map(|l| {
            let parsed = Config::parse(l);
            Line {
                text: l.clone(),
                ending,
                kind: parsed
                    .lines
                    .into_iter()
                    .next()
                    .map_or(LineKind::Blank, |p| p.kind),
            }
        }));
        lines.push(comment(end_marker(alias), last_ending));
        lines
    };
    if let Some(existing) = blocks.iter().find(|b| b.alias == alias) {
        // Keep whether the end marker closed the file without a newline (see `remove_block`).
        let last_ending = config.lines[existing.end].ending;
        config
            .lines
            .splice(existing.begin..=existing.end, build(last_ending));
    } else if let Some(header) = config.first_shadowing_line() {
        // Before any Host, Match or Include that could shadow it. The first may be another
        // managed block's `Host` line: go before its marker.
        let at = blocks
            .iter()
            .find(|b| (b.begin..=b.end).contains(&header))
            .map_or(header, |b| b.begin);
        config.lines.splice(at..at, build(ending));
    } else {
        // No blocks: append. A file without a final newline gets one before the block, and the
        // block then ends without one, so removal can restore the original exactly.
        let last_ending = match config.lines.last_mut() {
            Some(last) if last.ending == LineEnding::None => {
                last.ending = ending;
                LineEnding::None
            }
            _ => ending,
        };
        config.lines.extend(build(last_ending));
    }
    Ok(config.render())
}

/// Remove the managed block for `alias`; `None` when there is none.
pub fn remove_block(text: &str, alias: &str) -> Result<Option<String>> {
    validate_alias(alias)?;
    let mut config = Config::parse(text);
    let Some(block) = managed_blocks(&config)?
        .into_iter()
        .find(|b| b.alias == alias)
    else {
        return Ok(None);
    };
    let ended_file_without_newline = config.lines[block.end].ending == LineEnding::None;
    config.lines.drain(block.begin..=block.end);
    if ended_file_without_newline && block.begin > 0 && block.begin == config.lines.len() {
        config.lines[block.begin - 1].ending = LineEnding::None;
    }
    Ok(Some(config.render()))
}
