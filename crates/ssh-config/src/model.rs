//! A lossless model of an ssh_config file.
//!
//! The file is a list of [`Line`]s, each keeping its exact text and line ending, so
//! [`Config::render`] gives back the input byte for byte. On top of the raw text each line carries
//! what ssh would read from it: a blank, a comment, a `Host`/`Match` header that opens a block, or
//! an option with its arguments split the way OpenSSH splits them.

/// How a line ends. The last line of a file may have no ending at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    Lf,
    CrLf,
    None,
}

impl LineEnding {
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
            LineEnding::None => "",
        }
    }
}

/// What a line means to ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Blank,
    Comment,
    /// `Host pattern...`: starts a block that applies to the listed patterns.
    Host(Vec<String>),
    /// `Match criteria...`: starts a block with conditions.
    Match(Vec<String>),
    /// Any other `Keyword args...` line.
    Option {
        keyword: String,
        args: Vec<String>,
    },
}

/// One line: its text without the ending, the ending, and its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub ending: LineEnding,
    pub kind: LineKind,
}

/// A whole file as lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub lines: Vec<Line>,
}

impl Config {
    /// Parse any text; never fails (ssh itself reports semantic errors). Unbalanced quotes keep
    /// the rest of the line as one argument, as a best effort.
    pub fn parse(text: &str) -> Self {
        let mut lines = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (body, ending, next) = match rest.find('\n') {
                Some(i) if i > 0 && rest.as_bytes()[i - 1] == b'\r' => {
                    (&rest[..i - 1], LineEnding::CrLf, &rest[i + 1..])
                }
                Some(i) => (&rest[..i], LineEnding::Lf, &rest[i + 1..]),
                None => (rest, LineEnding::None, ""),
            };
            lines.push(Line {
                text: body.to_owned(),
                ending,
                kind: classify(body),
            });
            rest = next;
        }
        Self { lines }
    }

    /// The exact text this config was parsed from (plus any edits).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum());
        for line in &self.lines {
            out.push_str(&line.text);
            out.push_str(line.ending.as_str());
        }
        out
    }

    /// The line ending this file mostly uses (the first line's), `\n` for an empty file.
    pub fn dominant_ending(&self) -> LineEnding {
        self.lines
            .iter()
            .map(|l| l.ending)
            .find(|e| *e != LineEnding::None)
            .unwrap_or(LineEnding::Lf)
    }

    /// Index of the first line that can make options apply before a block inserted there:
    /// a `Host` or `Match` header, or a top-level `Include` (whose files may hold `Host *`
    /// blocks; ssh reads them in place, so an earlier `Include` wins over a later block).
    pub fn first_shadowing_line(&self) -> Option<usize> {
        self.lines.iter().position(|l| match &l.kind {
            LineKind::Host(_) | LineKind::Match(_) => true,
            LineKind::Option { keyword, .. } => keyword.eq_ignore_ascii_case("include"),
            _ => false,
        })
    }

    /// Index of the first `Host` or `Match` line: global options end there.
    pub fn first_block_header(&self) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| matches!(l.kind, LineKind::Host(_) | LineKind::Match(_)))
    }

    /// The options that apply inside the block opened by the `Host` line whose patterns include
    /// `alias` exactly (the first such block), in order. For tests and diagnostics; ssh's own
    /// resolution is checked with `ssh -G`.
    pub fn host_options(&self, alias: &str) -> Option<Vec<(String, Vec<String>)>> {
        let start = self.lines.iter().position(
            |l| matches!(&l.kind, LineKind::Host(patterns) if patterns.iter().any(|p| p == alias)),
        )?;
        Some(
            self.lines[start + 1..]
                .iter()
                .take_while(|l| !matches!(l.kind, LineKind::Host(_) | LineKind::Match(_)))
                .filter_map(|l| match &l.kind {
                    LineKind::Option { keyword, args } => Some((keyword.clone(), args.clone())),
                    _ => None,
                })
                .collect(),
        )
    }
}

fn classify(body: &str) -> LineKind {
    let trimmed = body.trim_start_matches([' ', '\t']);
    if trimmed.trim_end().is_empty() {
        return LineKind::Blank;
    }
    if trimmed.starts_with('#') {
        return LineKind::Comment;
    }
    // A keyword ends at whitespace or '='; one '=' may separate it from the arguments.
    let end = trimmed.find([' ', '\t', '=']).unwrap_or(trimmed.len());
    let keyword = &trimmed[..end];
    let mut rest = trimmed[end..].trim_start_matches([' ', '\t']);
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start_matches([' ', '\t']);
    }
    let args = split_args(rest);
    if keyword.eq_ignore_ascii_case("host") {
        LineKind::Host(args)
    } else if keyword.eq_ignore_ascii_case("match") {
        LineKind::Match(args)
    } else {
        LineKind::Option {
            keyword: keyword.to_owned(),
            args,
        }
    }
}

/// Lines joined with a `\n` after each one.
pub(crate) fn join_lines(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Split arguments as OpenSSH's `argv_split` does: whitespace separates, double or single quotes
/// group, a backslash escapes a quote, a backslash or a space; an unquoted `#` starts a comment.
pub fn split_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.peek() {
            None | Some('#') => return args,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next_if(|n| matches!(n, '"' | '\'' | '\\' | ' ')) {
                    Some(escaped) => arg.push(escaped),
                    None => arg.push('\\'),
                },
                ('"' | '\'', None) => quote = Some(c),
                (q, Some(open)) if q == open => quote = None,
                (' ' | '\t', None) => break,
                (c, _) => arg.push(c),
            }
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_like_openssh() {
        let cases: &[(&str, &[&str])] = &[
            ("a b\tc", &["a", "b", "c"]),
            (r#""with space" plain"#, &["with space", "plain"]),
            ("'single quoted' x", &["single quoted", "x"]),
            (r#""say \"hi\"""#, &[r#"say "hi""#]),
            (r"back\\slash", &[r"back\slash"]),
            ("a # comment", &["a"]),
            (r#""a#b""#, &["a#b"]),
            ("", &[]),
            ("   ", &[]),
            (r#""unterminated rest"#, &["unterminated rest"]),
        ];
        for (text, want) in cases {
            assert_eq!(split_args(text), *want, "{text:?}");
        }
    }

    #[test]
    fn lines_are_classified() {
        let config = Config::parse(
            "# top\n\nUser=bob\nHost a b\r\n  HostName = x.example\nMatch host c exec \"true\"\n\tPort 22",
        );
        let kinds: Vec<_> = config.lines.iter().map(|l| (&l.kind, l.ending)).collect();
        assert_eq!(
            kinds,
            [
                (&LineKind::Comment, LineEnding::Lf),
                (&LineKind::Blank, LineEnding::Lf),
                (
                    &LineKind::Option {
                        keyword: "User".into(),
                        args: vec!["bob".into()]
                    },
                    LineEnding::Lf
                ),
                (
                    &LineKind::Host(vec!["a".into(), "b".into()]),
                    LineEnding::CrLf
                ),
                (
                    &LineKind::Option {
                        keyword: "HostName".into(),
                        args: vec!["x.example".into()]
                    },
                    LineEnding::Lf
                ),
                (
                    &LineKind::Match(vec![
                        "host".into(),
                        "c".into(),
                        "exec".into(),
                        "true".into()
                    ]),
                    LineEnding::Lf
                ),
                (
                    &LineKind::Option {
                        keyword: "Port".into(),
                        args: vec!["22".into()]
                    },
                    LineEnding::None
                ),
            ]
        );
        assert_eq!(config.first_block_header(), Some(3));
        assert_eq!(
            config.host_options("b").unwrap(),
            [("HostName".to_owned(), vec!["x.example".to_owned()])]
        );
    }
}
