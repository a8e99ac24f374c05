use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{NamingError, Result};

/// The value of the `flyte.org/spec-sha` annotation: the first 8 bytes of the SHA-256 of the
/// spec's [`canonical_json`], as 16 lower-case hex characters. Equal specs give equal hashes
/// whatever order their maps were built in, so an unchanged spec is never redeployed.
pub fn spec_sha<T: Serialize + ?Sized>(spec: &T) -> Result<String> {
    let canonical = canonical_json(spec)?;
    Ok(hex::encode(&Sha256::digest(canonical.as_bytes())[..8]))
}

/// JSON with object keys sorted (by bytes) at every depth and no whitespace.
///
/// We sort explicitly rather than rely on `serde_json::Map` being a `BTreeMap`: another crate in
/// the same build can turn on `serde_json`'s `preserve_order`, and feature unification would then
/// silently change every hash.
pub fn canonical_json<T: Serialize + ?Sized>(spec: &T) -> Result<String> {
    let value =
        serde_json::to_value(spec).map_err(|e| NamingError::SpecNotSerializable(e.to_string()))?;
    let mut out = String::new();
    write_canonical(&value, &mut out);
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars have one JSON spelling already.
        scalar => out.push_str(&scalar.to_string()),
    }
}
