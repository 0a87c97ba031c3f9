//! What can go wrong talking to a registry, each failure with the place it happened.

use std::io;
use std::path::PathBuf;

use crate::Digest;

/// Where a failure happened: the registry host and, when the request was about one, the
/// repository. Shown as `host/repository` (or `host`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Registry host as in the reference (`localhost:5000`, `docker.io`).
    pub registry: String,
    /// Repository path (`library/busybox`), if the request concerned one.
    pub repository: Option<String>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.repository {
            Some(repo) => write!(f, "{}/{}", self.registry, repo),
            None => f.write_str(&self.registry),
        }
    }
}

/// The first entry of a registry's JSON error body (`{"errors":[{"code","message"}]}`),
/// shown after the status when present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryMessage {
    /// The error code (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`, `DENIED`...).
    pub code: Option<String>,
    /// The human-readable message.
    pub message: Option<String>,
}

impl std::fmt::Display for RegistryMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => write!(f, ": {c}: {m}"),
            (Some(c), None) => write!(f, ": {c}"),
            (None, Some(m)) => write!(f, ": {m}"),
            (None, None) => Ok(()),
        }
    }
}

/// A failed registry operation or credential lookup.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),

    /// The registry could not be reached or the connection failed, after every retry.
    #[error("{place}: {what} failed after {attempts} attempt(s)")]
    Transport {
        /// Where.
        place: Place,
        /// The request (`GET manifest latest`, `PUT blob sha256:…`).
        what: String,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure.
        #[source]
        source: reqwest::Error,
    },

    /// The registry answered with an unexpected status.
    #[error("{place}: {what}: HTTP {status}{detail}")]
    Status {
        /// Where.
        place: Place,
        /// The request.
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's own error code and message.
        detail: RegistryMessage,
    },

    /// The registry refused the credentials, or wanted some and had none.
    #[error("{place}: unauthorized (HTTP {status}){detail}; log in with `kiln login {registry}`", registry = place.registry)]
    Unauthorized {
        /// Where.
        place: Place,
        /// 401 or 403.
        status: u16,
        /// The registry's own error code and message.
        detail: RegistryMessage,
    },

    /// The manifest or blob does not exist.
    #[error("{place}: {what} not found{detail}")]
    NotFound {
        /// Where.
        place: Place,
        /// `manifest latest`, `blob sha256:…`.
        what: String,
        /// The registry's own error code and message.
        detail: RegistryMessage,
    },

    /// The token endpoint named by the registry's challenge failed.
    #[error("{place}: token request to {realm} failed: HTTP {status}{detail}")]
    Token {
        /// Where.
        place: Place,
        /// The token endpoint.
        realm: String,
        /// Its HTTP status.
        status: u16,
        /// Its error code and message, if any.
        detail: RegistryMessage,
    },

    /// Content whose digest is not the one asked for (nothing of it was kept).
    #[error("{place}: content of {expected} has digest {actual}")]
    DigestMismatch {
        /// Where.
        place: Place,
        /// The digest that was asked for.
        expected: Digest,
        /// The digest of what arrived (or of what was about to be sent).
        actual: Digest,
    },

    /// Content that is not the size its descriptor says (nothing of it was kept).
    #[error("{place}: {digest} should be {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Where.
        place: Place,
        /// The content's digest.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Size seen (at least this much, when the content ran past the expected size).
        actual: u64,
    },

    /// A transfer that stopped before all its bytes were through (tried again).
    #[error("{place}: transfer of {digest} stopped at {actual} of {expected} bytes")]
    Truncated {
        /// Where.
        place: Place,
        /// The blob.
        digest: Digest,
        /// Bytes that should have been through.
        expected: u64,
        /// Bytes that were.
        actual: u64,
    },

    /// A manifest, config or token answer larger than kiln reads into memory.
    #[error("{place}: {what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// Where.
        place: Place,
        /// What was being read.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A manifest, index or token answer that is not the JSON it should be.
    #[error("{place}: {what} is not valid")]
    BadJson {
        /// Where.
        place: Place,
        /// What was being parsed.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A digest in a header or document that is not a sha256 digest.
    #[error("{place}: {what} has an invalid digest {value:?}")]
    BadDigest {
        /// Where.
        place: Place,
        /// Where the digest was found.
        what: String,
        /// The text.
        value: String,
    },

    /// A header the protocol needs is missing or unreadable.
    #[error("{place}: {what}: header {header} is missing or invalid")]
    BadHeader {
        /// Where.
        place: Place,
        /// The request.
        what: String,
        /// The header's name.
        header: &'static str,
    },

    /// A manifest media type kiln cannot handle where it was found.
    #[error("{place}: {reference} has unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// Where.
        place: Place,
        /// The tag or digest.
        reference: String,
        /// The media type.
        media_type: String,
    },

    /// No manifest in the index is for the wanted platform.
    #[error("{reference}: no image for platform {wanted} (available: {})", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoMatchingPlatform {
        /// The reference that was resolved.
        reference: String,
        /// The wanted platform.
        wanted: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },

    /// The reference names a single image, built for another platform.
    #[error(
        "{reference}: the image is for {actual}, not {wanted} (it names one image, not an index of platforms)"
    )]
    PlatformMismatch {
        /// The reference that was resolved.
        reference: String,
        /// The wanted platform.
        wanted: String,
        /// The platform the image's config names.
        actual: String,
    },

    /// A reference that cannot be used for this operation.
    #[error("{reference}: {reason}")]
    BadReference {
        /// The reference.
        reference: String,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// The local blob store failed to store or read a blob.
    #[error("local store: {what} {digest}")]
    Store {
        /// `writing`, `reading`.
        what: &'static str,
        /// The blob.
        digest: Digest,
        /// The store's error.
        #[source]
        source: io::Error,
    },

    /// A docker config file could not be read.
    #[error("cannot read credentials file {}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },

    /// A docker config file is not valid JSON of the expected shape.
    #[error("credentials file {} is not valid", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// An `auths` entry whose `auth` field is not base64 of `user:password`.
    #[error("credentials file {}: entry {key:?} has an invalid auth field", path.display())]
    ConfigAuth {
        /// The file.
        path: PathBuf,
        /// The `auths` key.
        key: String,
    },

    /// A docker config file could not be written.
    #[error("cannot write credentials file {}", path.display())]
    ConfigWrite {
        /// The file.
        path: PathBuf,
        /// The write error.
        #[source]
        source: io::Error,
    },

    /// No docker config location: neither `DOCKER_CONFIG` nor `HOME` is set.
    #[error("cannot locate the docker config file: neither DOCKER_CONFIG nor HOME is set")]
    NoConfigDir,

    /// A credential helper could not be run.
    #[error("cannot run credential helper docker-credential-{helper}")]
    HelperSpawn {
        /// The helper's name.
        helper: String,
        /// Why it could not be run.
        #[source]
        source: io::Error,
    },

    /// A credential helper failed or answered something unreadable.
    #[error("credential helper docker-credential-{helper} {action} failed: {message}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// `get`, `store`, `erase`.
        action: &'static str,
        /// Its output or the parse failure.
        message: String,
    },
}

impl RegistryError {
    /// Whether this error is worth another attempt: connection trouble and the
    /// statuses registries use for overload or temporary failure.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::Truncated { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
