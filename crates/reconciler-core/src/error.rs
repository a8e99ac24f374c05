//! The crate's one error type.

use crate::effects::EffectKind;

/// What went wrong in a pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An effect failed; the pass stopped without committing and must be retried.
    #[error("{effect} failed: {message}")]
    EffectFailed {
        /// Which effect.
        effect: EffectKind,
        /// What the driver reported.
        message: String,
    },
    /// A write was rejected because the object changed; re-read it and run a new pass.
    #[error("{effect} conflicted: the object changed since it was observed")]
    Conflict {
        /// Which effect.
        effect: EffectKind,
    },
    /// The driver answered an effect with the wrong kind of result (a driver bug).
    #[error("{expected} cannot be answered with a {got} result")]
    UnexpectedResult {
        /// The effect awaiting an answer.
        expected: EffectKind,
        /// The variant of the result given.
        got: &'static str,
    },
    /// The driver resumed a pass that had already finished (a driver bug).
    #[error("the pass already finished")]
    PassFinished,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
