use std::fmt;
use std::path::Path;

use crate::{Result, TunnelError};

/// One HTTP header for the WebSocket request. `Debug` hides the value: it is usually a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

/// Read a headers file with the same rules as Flyte's proxy: one `Name: value` per line, lines
/// without `:` skipped, name and value trimmed. Errors name the file and never echo its content.
pub fn read_headers_file(path: &Path) -> Result<Vec<Header>> {
    let bad = |reason: String| TunnelError::LocalFile {
        what: "the headers file",
        path: path.to_owned(),
        reason,
    };
    if path.is_dir() {
        return Err(bad("it is a directory".to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut headers = Vec::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(bad(format!(
                "the header name {name:?} is not a valid HTTP header name"
            )));
        }
        headers.push(Header {
            name: name.to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok(headers)
}

#[allow(
    clippy::disallowed_methods,
    reason = "tests write their fixtures directly"
)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_flytes_proxy() {
        let dir = std::env::temp_dir().join(format!("flyte-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("h");
        std::fs::write(
            &file,
            "Authorization:  Bearer abc.def \nno colon here\n\n X-Extra : v:with:colons\r\n",
        )
        .unwrap();
        let headers = read_headers_file(&file).unwrap();
        assert_eq!(
            headers,
            [
                Header {
                    name: "Authorization".into(),
                    value: "Bearer abc.def".into()
                },
                Header {
                    name: "X-Extra".into(),
                    value: "v:with:colons".into()
                },
            ]
        );
        assert_eq!(format!("{:?}", headers[0]), "Authorization: <redacted>");

        let missing = read_headers_file(&dir.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
        assert_eq!(missing.exit_code(), crate::exit_code::CONFIG);
        let is_dir = read_headers_file(&dir).unwrap_err();
        assert!(is_dir.to_string().contains("is a directory"), "{is_dir}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
