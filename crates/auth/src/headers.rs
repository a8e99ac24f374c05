//! The headers file `flyte-run tunnel --http-headers-file` reads: one `Name: value` per line.

use std::path::Path;

use crate::{AuthError, Result};

/// `~/.flyte/ssh-debug/<alias>.headers`: characters other than `[A-Za-z0-9_-]` in the alias
/// become `_`, as Flyte names it, so reconnecting refreshes the same file.
pub fn default_headers_file(debug_dir: &Path, alias: &str) -> std::path::PathBuf {
    let safe: String = alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    debug_dir.join(format!("{safe}.headers"))
}

/// Write `<header>: Bearer <token>` to `path`, created 0600 at open and replaced atomically.
/// A token or header name that could inject a second header line is refused.
pub fn write_headers_file(path: &Path, header_name: &str, token: &flyte_api::Secret) -> Result<()> {
    if header_name.is_empty()
        || !header_name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(AuthError::InvalidHeader(format!(
            "{header_name:?} is not an HTTP header name"
        )));
    }
    if token.expose().contains(['\r', '\n']) {
        return Err(AuthError::InvalidHeader(
            "the token contains a line break, which would inject a header; refusing to write it"
                .to_owned(),
        ));
    }
    let content = format!("{header_name}: Bearer {}\n", token.expose());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| AuthError::InvalidHeader(format!("{}: {e}", dir.display())))?;
    }
    flyte_fs::replace(path, content.as_bytes(), flyte_fs::SECRET_MODE)?;
    Ok(())
}
