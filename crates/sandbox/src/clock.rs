//! The sandbox's one clock: wall time is read here and nowhere else, so every timestamp it
//! stores or signs agrees.

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch (token times).
pub(crate) fn unix_secs() -> i64 {
    unix_millis().div_euclid(1000)
}

/// Now, as the reconciler takes it.
pub(crate) fn now() -> flyte_reconciler_core::Timestamp {
    flyte_reconciler_core::Timestamp::from_millis(unix_millis())
}
