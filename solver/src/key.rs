//! Cache keys: SHA-256 over a versioned, canonical encoding of a step.
//!
//! A step's key covers its op (normalised, as JSON with a fixed field order and no maps
//! of unspecified order), the keys of its inputs — so a change anywhere upstream changes
//! every key downstream — and the content checksums of the files it reads from its
//! inputs. Nothing else enters: not the step's display name, not mtimes, not which
//! build asked. Changing the encoding in any way must bump [`CACHE_KEY_VERSION`], which
//! makes every old record unreachable instead of wrong.

use std::fmt;

use kiln_image::{Digest, Digester};
use serde::Serialize;

use crate::op::Op;

/// The version tag every key is computed under.
pub const CACHE_KEY_VERSION: &str = "kiln-cache-key-v1";

/// The identity of a step's result in the cache.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CacheKey(Digest);

impl CacheKey {
    /// The key as a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// Wraps a digest read back from a cache record.
    pub fn from_digest(digest: Digest) -> CacheKey {
        CacheKey(digest)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.0)
    }
}

/// The digest of an op alone, as it enters keys. Equal ops have equal digests.
pub fn op_digest(op: &Op) -> Digest {
    let json = serde_json::to_vec(op).expect("ops serialise: no maps with non-string keys");
    let mut d = Digester::new();
    d.field(b"op", &json);
    d.finish()
}

/// The key of a step from its op digest, its inputs' keys (in input order) and the
/// content checksums of its selections (in the order [`Op::selectors`] gives them).
pub fn cache_key(op: &Digest, inputs: &[CacheKey], checksums: &[Digest]) -> CacheKey {
    let mut d = Digester::new();
    d.field(b"version", CACHE_KEY_VERSION.as_bytes());
    d.field(b"op", op.to_string().as_bytes());
    for input in inputs {
        d.field(b"input", input.0.to_string().as_bytes());
    }
    for checksum in checksums {
        d.field(b"content", checksum.to_string().as_bytes());
    }
    CacheKey(d.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ExecOp, NetworkMode, SourceOp};

    fn exec(args: &[&str]) -> Op {
        Op::Exec(ExecOp {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            insecure: false,
            mounts: Vec::new(),
            hostname: "kiln".into(),
            proxy_env: Vec::new(),
        })
    }

    #[test]
    fn equal_ops_have_equal_digests_and_different_ops_do_not() {
        assert_eq!(op_digest(&exec(&["true"])), op_digest(&exec(&["true"])));
        assert_ne!(op_digest(&exec(&["true"])), op_digest(&exec(&["false"])));
        // Argument boundaries matter: ["a b"] is not ["a", "b"].
        assert_ne!(op_digest(&exec(&["a b"])), op_digest(&exec(&["a", "b"])));
    }

    #[test]
    fn keys_depend_on_inputs_and_content_and_their_order() {
        let op = op_digest(&exec(&["true"]));
        let base = cache_key(&op_digest(&Op::Source(SourceOp::Scratch)), &[], &[]);
        let other = cache_key(&op_digest(&exec(&["x"])), &[], &[]);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let key = |inputs: [&CacheKey; 1], content: [&Digest; 1]| {
            cache_key(&op, &[inputs[0].clone()], &[content[0].clone()])
        };
        assert_eq!(key([&base], [&a]), key([&base], [&a]));
        assert_ne!(key([&base], [&a]), key([&other], [&a]));
        assert_ne!(key([&base], [&a]), key([&base], [&b]));
        let ab = [a.clone(), b.clone()];
        let ba = [b, a];
        assert_ne!(cache_key(&op, &[], &ab), cache_key(&op, &[], &ba));
    }

    #[test]
    fn key_encoding_is_stable() {
        // Pinned: if this changes, CACHE_KEY_VERSION must change with it.
        let key = cache_key(&op_digest(&Op::Source(SourceOp::Scratch)), &[], &[]);
        assert_eq!(
            key.to_string(),
            "sha256:153a693008250c2ab2e878238021ce0e60dd2306abb2967655cf7c333ff1665f",
            "the key encoding changed; bump CACHE_KEY_VERSION and re-pin"
        );
    }
}
