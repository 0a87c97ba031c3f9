//! Chain IDs: the names of unpacked layer stacks, as the OCI image spec defines them.
//!
//! `ChainID(L0) = DiffID(L0)` and `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " +
//! DiffID(Ln))`, with digests in their `sha256:<hex>` text form. A chain ID names the
//! filesystem produced by applying exactly those layers in that order, whatever
//! compression their blobs used, which is what makes it the key of a snapshot.

use std::fmt;

use kiln_image::Digest;

/// The chain ID of a stack of layers.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChainId(Digest);

impl ChainId {
    /// The chain ID of a single base layer.
    pub fn base(diff_id: &Digest) -> ChainId {
        ChainId(diff_id.clone())
    }

    /// The chain ID of this stack with one more layer on top.
    pub fn child(&self, diff_id: &Digest) -> ChainId {
        ChainId(Digest::of(format!("{} {}", self.0, diff_id).as_bytes()))
    }

    /// The chain ID of `diff_id` applied over `parent` (or over nothing).
    pub fn of(parent: Option<&ChainId>, diff_id: &Digest) -> ChainId {
        match parent {
            Some(parent) => parent.child(diff_id),
            None => ChainId::base(diff_id),
        }
    }

    /// The chain IDs of every prefix of `diff_ids`, bottom first; the last one names the
    /// whole stack.
    pub fn prefixes<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::new();
        for diff_id in diff_ids {
            let next = ChainId::of(out.last(), diff_id);
            out.push(next);
        }
        out
    }

    /// The chain ID as a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

impl From<Digest> for ChainId {
    fn from(d: Digest) -> ChainId {
        ChainId(d)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_is_the_diff_id_and_children_hash_the_text_form() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chain = ChainId::prefixes([&a, &b]);
        assert_eq!(chain[0].digest(), &a);
        let by_hand = Digest::of(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        assert_eq!(chain[1].digest(), &by_hand);
        assert!(ChainId::prefixes([]).is_empty());
    }
}
