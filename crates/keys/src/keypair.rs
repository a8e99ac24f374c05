use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use base64ct::Encoding as _;
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::{KeyError, Result};

/// File name of the client key inside its directory (the `.pub` sits beside it); flyte-home
/// owns the `~/.flyte` layout.
pub const KEY_FILE_NAME: &str = flyte_home::KEY_FILE;
/// Comment on keys we create, as Flyte's client writes it.
pub const KEY_COMMENT: &str = "flyte-ssh-debug";

/// The client key pair, as the rest of the flow needs it. Holds no secret: the private key stays
/// in its file and only its path travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Absolute path of the private key (what ssh's `IdentityFile` names).
    pub private_key_path: PathBuf,
    /// One OpenSSH public key line, `ssh-ed25519 AAAA... comment` (what `_F_SSH_PK` carries).
    pub public_key: String,
    /// `SHA256:...`, the text `ssh-keygen -lf` prints for the key.
    pub fingerprint: String,
}

/// Create the ed25519 key pair in `dir` the first time, then reuse it.
///
/// `dir` is created with mode 0700 when missing. The private key is created 0600 at open and
/// linked into place only when complete, so concurrent callers end with one key and all return it.
/// A missing or stale `.pub` is rewritten from the private key. A private key that is unusable
/// (too open, corrupt, not ed25519, passphrase-protected) is an error and is never replaced.
pub fn ensure_keypair(dir: &Path) -> Result<KeyPair> {
    create_dir_0700(dir)?;
    let path = dir.join(KEY_FILE_NAME);
    let private = load_or_create(&path, KEY_COMMENT)?;
    let public = private.public_key();
    ensure_public_file(&path.with_extension("pub"), public)?;
    let private_key_path = std::path::absolute(&path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(KeyPair {
        private_key_path,
        public_key: encode_public(public)?,
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
    })
}

pub(crate) fn encode_public(public: &PublicKey) -> Result<String> {
    public
        .to_openssh()
        .map_err(|e| KeyError::Encode(e.to_string()))
}

fn create_dir_0700(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::NotWritable {
            dir: dir.to_owned(),
            reason: "a file with that name is in the way".to_owned(),
        }),
        Err(e) => Err(KeyError::NotWritable {
            dir: dir.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Load the ed25519 private key at `path`, creating it (with `comment`) if nothing is there.
pub(crate) fn load_or_create(path: &Path, comment: &str) -> Result<PrivateKey> {
    if !entry_exists(path)? {
        let key = generate(comment)?;
        let pem = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let created = flyte_fs::create_new(path, pem.as_bytes(), flyte_fs::SECRET_MODE).map_err(
            |e| match e.io_kind() {
                Some(io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem) => {
                    KeyError::NotWritable {
                        dir: path.parent().unwrap_or(path).to_owned(),
                        reason: e.to_string(),
                    }
                }
                _ => KeyError::Fs(e),
            },
        )?;
        if created == flyte_fs::Created::Created {
            tracing::info!(path = %path.display(), "created a new ed25519 key");
            return Ok(key);
        }
        // Another process won the race; use its key, read back like any existing one.
    }
    load_existing(path)
}

/// Whether anything is at `path`; a directory or a dangling symlink is an error, not "missing".
fn entry_exists(path: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(KeyError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() && fs::metadata(path).is_err() {
        let target = fs::read_link(path).unwrap_or_default();
        return Err(KeyError::DanglingSymlink {
            path: path.to_owned(),
            target,
        });
    }
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(KeyError::IsDirectory {
            path: path.to_owned(),
        });
    }
    Ok(true)
}

fn load_existing(path: &Path) -> Result<PrivateKey> {
    entry_exists(path)?;
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::PermissionsTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = fs::read(path).map_err(read_err)?;
    let key = PrivateKey::from_openssh(&pem).map_err(|e| match algorithm_name(&pem) {
        // Parsed far enough to name a key type we do not handle (ECDSA, RSA ...).
        Some(algorithm) if algorithm != "ssh-ed25519" => KeyError::WrongAlgorithm {
            path: path.to_owned(),
            algorithm,
        },
        _ => KeyError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })?;
    if key.is_encrypted() {
        return Err(KeyError::NeedsPassphrase {
            path: path.to_owned(),
        });
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(KeyError::WrongAlgorithm {
            path: path.to_owned(),
            algorithm: key.algorithm().to_string(),
        });
    }
    Ok(key)
}

/// The algorithm name in an OpenSSH private key file's public section, read without parsing the
/// key itself: `"openssh-key-v1\0"`, cipher, KDF and KDF options (length-prefixed strings), a key
/// count, then the first public key blob, which starts with the algorithm name.
fn algorithm_name(pem: &[u8]) -> Option<String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = tail;
        Some(head)
    }
    fn string<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?);
        take(bytes, usize::try_from(len).ok()?)
    }
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let decoded = base64ct::Base64::decode_vec(&body).ok()?;
    let mut bytes = decoded.strip_prefix(b"openssh-key-v1\0")?;
    for _ in 0..3 {
        string(&mut bytes)?; // cipher, kdf, kdf options
    }
    take(&mut bytes, 4)?; // number of keys
    let mut public = string(&mut bytes)?;
    let name = string(&mut public)?;
    String::from_utf8(name.to_vec()).ok()
}

fn generate(comment: &str) -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let pair = Ed25519Keypair::from_seed(&seed);
    // `Ed25519Keypair` zeroizes itself on drop; the seed copy on our stack is overwritten here.
    seed.fill(0);
    PrivateKey::new(KeypairData::Ed25519(pair), comment)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Make `<key>.pub` hold the public half of the private key, rewriting it when it is missing,
/// unreadable or of another key.
fn ensure_public_file(pub_path: &Path, public: &PublicKey) -> Result<()> {
    if fs::metadata(pub_path).is_ok_and(|m| m.is_dir()) {
        return Err(KeyError::IsDirectory {
            path: pub_path.to_owned(),
        });
    }
    let matches = fs::read_to_string(pub_path)
        .ok()
        .and_then(|text| PublicKey::from_openssh(text.trim()).ok())
        .is_some_and(|existing| existing.key_data() == public.key_data());
    if !matches {
        tracing::info!(path = %pub_path.display(), "writing the public key from the private key");
        let line = format!("{}\n", encode_public(public)?);
        flyte_fs::replace(pub_path, line.as_bytes(), 0o644)?;
    }
    Ok(())
}
