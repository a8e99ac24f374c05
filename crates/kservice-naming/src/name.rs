use std::fmt;

use sha2::{Digest, Sha256};

use crate::{NamingError, Result};

/// The longest Kubernetes DNS-1123 label, and so the longest KService name.
pub const MAX_NAME_LEN: usize = 63;

/// How many characters of the lower-cased raw name survive when it is too long. 54 + `-` + 8 hex
/// characters = 63.
const TRUNCATED_PREFIX_LEN: usize = 54;

/// Which of the three inputs an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Project,
    Domain,
    Name,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Project => "project",
            Part::Domain => "domain",
            Part::Name => "name",
        })
    }
}

/// The KService name Flyte gives the app `name` in `project`/`domain`.
///
/// All apps share one namespace, so the name encodes all three parts: the lower-cased
/// `name-project-domain` when it fits in 63 characters, else its first 54 characters, `-`, and the
/// first 4 bytes (8 hex characters) of `sha256("project/domain/name")` over the parts as given
/// (not lower-cased). Inputs whose name Kubernetes would reject are an error.
pub fn kservice_name(project: &str, domain: &str, name: &str) -> Result<String> {
    for (part, value) in [
        (Part::Name, name),
        (Part::Project, project),
        (Part::Domain, domain),
    ] {
        check_part(part, value)?;
    }
    // Every byte is ASCII now, so byte lengths and char counts agree, as they do in Flyte's Go.
    let raw = format!("{name}-{project}-{domain}").to_ascii_lowercase();
    let label = if raw.len() <= MAX_NAME_LEN {
        raw
    } else {
        let digest = Sha256::digest(format!("{project}/{domain}/{name}").as_bytes());
        format!(
            "{}-{}",
            &raw[..TRUNCATED_PREFIX_LEN],
            hex::encode(&digest[..4])
        )
    };
    if label.starts_with('-') {
        return Err(NamingError::HyphenAtEdge {
            name: label,
            where_: "start",
        });
    }
    if label.ends_with('-') {
        return Err(NamingError::HyphenAtEdge {
            name: label,
            where_: "end",
        });
    }
    Ok(label)
}

fn check_part(part: Part, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(NamingError::EmptyPart(part));
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(NamingError::InvalidCharacter {
            part,
            value: value.to_owned(),
            ch,
        });
    }
    Ok(())
}
