//! The headers file `flyte-run tunnel --http-headers-file` reads: one `Name: value` per line.

use std::path::Path;

use crate::{AuthError, Result};

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
        flyte_fs::create_private_dir(dir)
            .map_err(|e| AuthError::InvalidHeader(format!("{}: {e}", dir.display())))?;
    }
    flyte_fs::replace(path, content.as_bytes(), flyte_fs::SECRET_MODE)?;
    Ok(())
}
