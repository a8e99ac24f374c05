//! The headers file `flyte-run tunnel --http-headers-file` reads: one `Name: value` per line.

use std::path::Path;

use crate::{AuthError, Result};

/// `~/.flyte/ssh-debug/<alias>.headers`: characters other than `[A-Za-z0-9_-]` in the alias
/// become `_`, as Flyte names it, so reconnecting refreshes the same file.
pub fn default_headers_file(debug_dir: &Path, alias: &str) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
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
    if safe == alias {
        // Flyte's own name, so both tools find the same file.
        return debug_dir.join(format!("{safe}.headers"));
    }
    // Flyte's mapping is not injective (`team.prod` and `team_prod` both become `team_prod`),
    // and one alias's token would go to the other's route. An alias that needed replacing gets
    // a digest of its real spelling; the '.' before it never occurs in an unreplaced name.
    let digest = hex::encode(&Sha256::digest(alias.as_bytes())[..8]);
    debug_dir.join(format!("{safe}.{digest}.headers"))
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
        flyte_fs::create_private_dir(dir)
            .map_err(|e| AuthError::InvalidHeader(format!("{}: {e}", dir.display())))?;
    }
    flyte_fs::replace(path, content.as_bytes(), flyte_fs::SECRET_MODE)?;
    Ok(())
}

#[cfg(test)]
mod default_name_tests {
    use super::default_headers_file;
    use std::path::Path;

    #[test]
    fn clean_aliases_keep_flytes_name_and_others_cannot_collide() {
        let dir = Path::new("/d");
        let name = |alias: &str| {
            default_headers_file(dir, alias)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        // Flyte's name, for aliases Flyte leaves as they are.
        assert_eq!(name("flyte-debug"), "flyte-debug.headers");
        assert_eq!(name("team_prod"), "team_prod.headers");
        // Issue 13, defect 12: these two used to share `team_prod.headers`.
        let dotted = name("team.prod");
        assert!(dotted.starts_with("team_prod.") && dotted.ends_with(".headers"));
        assert_ne!(dotted, name("team_prod"));
        assert_ne!(name("team.prod"), name("team:prod"));
    }
}
