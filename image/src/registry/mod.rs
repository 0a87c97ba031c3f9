//! A client for OCI distribution registries (Docker Hub, `docker-registry`, GHCR…):
//! manifests and indexes by tag or digest, blobs pulled and pushed as streams, and the
//! authentication dance around them.
//!
//! The protocol is written here on `reqwest` rather than taken from `oci-client`, whose
//! token scopes cannot name a mount source repository and whose streamed uploads cannot be
//! retried under a policy of ours (a consumed stream is gone); kiln needs both.
//!
//! Shape of the client:
//! - Every request goes through one retry loop: connection failures, timeouts, 429 and
//!   5xx are tried again with exponential backoff ([`RetryPolicy`]); anything else fails
//!   at once with an error naming the registry, repository, status and the registry's
//!   own error code and message.
//! - Authentication is learnt per host from `GET /v2/`: none, basic, or bearer tokens
//!   from the challenge's realm, cached per host and scope set. Credentials come from
//!   [`Credentials`] (by default the user's docker config and its helpers).
//! - Blobs stream both ways and are never held whole in memory. Downloads feed the
//!   store's verifying writer through a small channel and resume with `Range` after a
//!   broken connection (or restart, skipping what was already delivered, when the
//!   registry ignores the range); content that does not hash to its digest is refused
//!   and never stored. Uploads read the store on a blocking thread into a bounded
//!   channel, as one `PUT` or as `PATCH` chunks ([`ClientOptions::chunk_size`]), after a
//!   `HEAD` (skip) and a cross-repository mount attempt.
//! - Manifests, configs and token answers are read into memory up to
//!   [`MANIFEST_LIMIT`] (4 MiB); larger answers are refused.
//! - Plain HTTP is used only for loopback hosts and hosts listed in
//!   [`ClientOptions::insecure_registries`].

mod blob;
mod client;
mod credentials;
mod error;
mod image;
mod manifest;

use std::time::Duration;

pub use client::RegistryClient;
pub use credentials::{
    Auth, Credentials, DOCKER_HUB_KEY, StoredWhere, config_key, erase_credentials,
    store_credentials,
};
pub use error::{Place, RegistryError, RegistryMessage};
pub use image::{BlobStore, PulledImage, pull_image, push_image};
pub use manifest::{MANIFEST_ACCEPT, Manifest, ResolvedImage};

use crate::Digest;

/// Largest manifest, index or image config read into memory.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// How a [`RegistryClient`] behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Hosts (`host[:port]`, or a bare host for every port) spoken to over plain HTTP,
    /// besides loopback addresses, which always are.
    pub insecure_registries: Vec<String>,
    /// Where credentials come from.
    pub credentials: Credentials,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// How many blobs an image pull or push transfers at once.
    pub max_concurrent_blobs: usize,
    /// `None`: upload each blob in one `PUT`; `Some(n)`: in `PATCH` chunks of `n` bytes.
    pub chunk_size: Option<u64>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a response may stay silent before the request counts as failed.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            insecure_registries: Vec::new(),
            credentials: Credentials::docker_config(),
            retry: RetryPolicy::default(),
            max_concurrent_blobs: 4,
            chunk_size: None,
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// How often and how patiently a failed request is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base_delay: Duration,
    /// Longest wait between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// What a blob push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The registry had the blob already.
    Existed,
    /// The registry linked it from another repository it holds.
    Mounted,
    /// Its bytes were sent.
    Uploaded,
}

/// How a blob transfer ended, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Pulled from the registry.
    Downloaded,
    /// Already in the local store: not pulled.
    Skipped,
    /// Already in the registry: not pushed.
    Existed,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Pushed to the registry.
    Uploaded,
}

impl From<PushOutcome> for Transfer {
    fn from(outcome: PushOutcome) -> Transfer {
        match outcome {
            PushOutcome::Existed => Transfer::Existed,
            PushOutcome::Mounted => Transfer::Mounted,
            PushOutcome::Uploaded => Transfer::Uploaded,
        }
    }
}

/// Receives progress of blob transfers. Every method has an empty default.
pub trait TransferProgress: Send + Sync {
    /// A transfer of `digest` began; `size` when known.
    fn started(&self, digest: &Digest, size: Option<u64>) {
        let _ = (digest, size);
    }

    /// `done` bytes of `digest` have been transferred (it may go back to 0 when a
    /// transfer restarts).
    fn advanced(&self, digest: &Digest, done: u64) {
        let _ = (digest, done);
    }

    /// The transfer of `digest` ended successfully.
    fn finished(&self, digest: &Digest, how: Transfer) {
        let _ = (digest, how);
    }
}

/// A [`TransferProgress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl TransferProgress for NoProgress {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(p.delay(u32::MAX), Duration::from_millis(500));
    }
}
