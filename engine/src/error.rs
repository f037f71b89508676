//! Errors of the storage engine, one enum for the crate, each variant carrying the context a
//! user or an operator needs to act on it (which file, which offset, what was wrong).

use std::fmt;
use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can report.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input breaks a rule of the data model (DynamoDB's `ValidationException`).
    Validation(String),
    /// Bytes on disk fail a check inside the part of a file that must be intact (acknowledged
    /// WAL records, checkpointed pages). Never silently skipped.
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// An operating-system I/O call failed.
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// An earlier write or fdatasync failed; the storage refuses further writes rather than
    /// retry a sync whose outcome is unknown (a failed fsync may have dropped dirty pages).
    Poisoned { cause: String },
    /// A setting is out of its allowed range.
    Config(String),
    /// A replicated partition's write or strong read reached a replica that does not lead
    /// (or has no lease); `leader` is the replica it believes leads, if any.
    /// `address` is where its node takes requests, when known.
    NotLeader { leader: Option<u32>, address: Option<String> },
    /// A replicated write's outcome is unknown: its replica lost leadership, or no quorum
    /// answered in time. It may or may not have taken effect.
    Unavailable(String),
    /// A partition that recovery could not replay (a log record whose checksum is good but whose
    /// command does not decode: a bug, not disk damage) refuses every request until an operator
    /// decides (`StoreConfig::quarantine_bad_records`); the core's other partitions serve.
    Held { partition: u64, reason: String },
    /// A write refused before it was proposed, because writes arrive faster than they are
    /// applied (DynamoDB's `ThrottlingException`): it did not take effect, and may be retried.
    Throttled(String),
    /// A write refused because the disk holding the store is full (a log segment or a
    /// checkpoint could not be written for want of space): it did not take effect, and may be
    /// retried once space is freed; the store resumes by itself.
    NoSpace(String),
}

impl Error {
    pub(crate) fn validation(message: impl Into<String>) -> Error {
        Error::Validation(message.into())
    }

    /// A write whose log record the replay decoder (recovery's, a follower's) refuses: refused
    /// before it is logged (the edge's checks should have caught it first; that they did not
    /// is a bug to report).
    pub fn unreplayable(reason: String) -> Error {
        Error::Validation(format!(
            "the write was refused before it was logged: its log record would not replay ({reason})"
        ))
    }

    #[cfg(feature = "storage")]
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }

    #[cfg(feature = "storage")]
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Error {
        Error::Io { op, path: path.into(), source: source.into() }
    }

    /// Whether this is an I/O call refused for want of space (ENOSPC, or EDQUOT: a quota),
    /// which is retried once space is freed rather than poisoning the storage: nothing was
    /// written that a later sync could lose.
    #[cfg(feature = "storage")]
    pub(crate) fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}

impl Error {
    /// What a client is told: a validation error's message as DynamoDB words it (without
    /// this type's "validation error: " label), any other error as displayed.
    pub fn reason(&self) -> String {
        match self {
            Error::Validation(message) => message.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Validation(message) => write!(f, "validation error: {message}"),
            Error::Corrupt { path, offset, reason } => {
                write!(f, "corruption in {} at offset {offset}: {reason}", path.display())
            }
            Error::Io { op, path, source } => write!(f, "{op} {} failed: {source}", path.display()),
            Error::Poisoned { cause } => {
                write!(f, "storage is poisoned by an earlier I/O failure ({cause}); reopen it")
            }
            Error::Config(message) => write!(f, "invalid configuration: {message}"),
            Error::NotLeader { leader: Some(leader), .. } => write!(f, "not the leader; replica {leader} leads"),
            Error::NotLeader { leader: None, .. } => write!(f, "not the leader, and no leader is known"),
            Error::Unavailable(reason) => write!(f, "unavailable: {reason}"),
            Error::Held { partition, reason } => write!(f, "partition {partition} is held: {reason}"),
            Error::Throttled(reason) => write!(f, "throttled: {reason}"),
            Error::NoSpace(reason) => write!(f, "the disk is full: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
