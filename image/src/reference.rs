//! Image references (`busybox`, `localhost:5000/team/app:1.2`, `alpine@sha256:…`) parsed
//! the way Docker parses them, so that what a user types means here what it means to
//! `docker pull`.
//!
//! The grammar is Docker's (`distribution/reference`): an optional registry host (told
//! apart from the first path component by a `.` or `:` in it, or by being `localhost`),
//! lowercase path components joined by `/`, an optional tag and an optional digest.
//! Normalisation is Docker's too: no host means `docker.io`, a single Docker Hub path
//! component gets `library/`, and a reference with neither tag nor digest gets `latest`.
//! A reference with both a tag and a digest keeps both; the digest is what pins content.
//!
//! [`ImageRef`] only holds references that passed those rules, so code handed one never
//! re-validates it. Only `sha256` digests are accepted, as everywhere in kiln.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, DigestError};

/// The registry assumed when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The Docker Hub namespace of official images (`busybox` is `library/busybox`).
pub const OFFICIAL_NAMESPACE: &str = "library";
/// The tag assumed when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository name (host and path) Docker accepts.
pub const NAME_MAX_LEN: usize = 255;
/// The longest tag Docker accepts.
pub const TAG_MAX_LEN: usize = 128;

/// A validated, normalised image reference.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `domain/path`, kept joined so every part can be handed out as a borrow.
    name: String,
    /// Length of the domain prefix of `name`.
    domain_len: usize,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference. Each variant carries the whole input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    /// The input is empty.
    #[error("image reference is empty")]
    Empty,
    /// The repository name is longer than [`NAME_MAX_LEN`].
    #[error(
        "image reference {reference:?}: repository name is {len} characters long (at most {NAME_MAX_LEN})"
    )]
    NameTooLong {
        /// The input.
        reference: String,
        /// Length of the normalised name.
        len: usize,
    },
    /// The repository path has uppercase letters.
    #[error("image reference {reference:?}: repository name {path:?} must be lowercase")]
    Uppercase {
        /// The input.
        reference: String,
        /// The offending path.
        path: String,
    },
    /// The input is a bare 64-hex image ID, which Docker refuses as a name.
    #[error(
        "image reference {reference:?}: a 64-character hex image ID cannot be used as a repository name"
    )]
    HexIdentifier {
        /// The input.
        reference: String,
    },
    /// The registry host (or its port) is malformed.
    #[error("image reference {reference:?}: invalid registry host {domain:?}")]
    InvalidDomain {
        /// The input.
        reference: String,
        /// The host part.
        domain: String,
    },
    /// A path component breaks the `[a-z0-9]+([._-]…)` rule (or is empty).
    #[error(
        "image reference {reference:?}: invalid path component {component:?} (lowercase letters and digits, separated by '.', '_', '__' or '-')"
    )]
    InvalidPathComponent {
        /// The input.
        reference: String,
        /// The offending component.
        component: String,
    },
    /// The tag is empty, too long or has characters other than `[A-Za-z0-9_.-]`.
    #[error(
        "image reference {reference:?}: invalid tag {tag:?} (1 to {TAG_MAX_LEN} of [A-Za-z0-9_.-], not starting with '.' or '-')"
    )]
    InvalidTag {
        /// The input.
        reference: String,
        /// The offending tag.
        tag: String,
    },
    /// The part after `@` is not a sha256 digest.
    #[error("image reference {reference:?}: invalid digest")]
    InvalidDigest {
        /// The input.
        reference: String,
        /// What is wrong with the digest.
        #[source]
        source: DigestError,
    },
}

impl ImageRef {
    /// The registry host, with port if any (`docker.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.name[..self.domain_len]
    }

    /// The repository path within the registry (`library/busybox`).
    pub fn path(&self) -> &str {
        &self.name[self.domain_len + 1..]
    }

    /// The full repository name (`docker.io/library/busybox`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag, if any (`latest` when the input had neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The repository name as `docker images` shows it: Docker Hub's host and the
    /// `library/` namespace of official images are left out (`busybox`,
    /// `someone/tool`, `localhost:5000/x`).
    pub fn familiar(&self) -> &str {
        if self.domain() != DEFAULT_DOMAIN {
            return &self.name;
        }
        let path = self.path();
        match path.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest,
            _ => path,
        }
    }

    /// The same repository with `tag` as its tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef, RefError> {
        format!("{}:{tag}", self.name).parse()
    }

    /// The same reference pinned to `digest` (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<ImageRef, RefError> {
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(RefError::HexIdentifier {
                reference: s.to_owned(),
            });
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest.parse().map_err(|source| RefError::InvalidDigest {
                    reference: s.to_owned(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a host:port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(tag[1..].to_owned()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(RefError::InvalidTag {
                reference: s.to_owned(),
                tag: tag.clone(),
            });
        }

        let (domain, path) = split_domain(name);
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(RefError::Uppercase {
                reference: s.to_owned(),
                path: path.to_owned(),
            });
        }
        if !valid_domain(domain) {
            return Err(RefError::InvalidDomain {
                reference: s.to_owned(),
                domain: domain.to_owned(),
            });
        }
        if let Some(bad) = path.split('/').find(|c| !valid_path_component(c)) {
            return Err(RefError::InvalidPathComponent {
                reference: s.to_owned(),
                component: bad.to_owned(),
            });
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_owned()
        };
        let full = format!("{domain}/{path}");
        if full.len() > NAME_MAX_LEN {
            return Err(RefError::NameTooLong {
                reference: s.to_owned(),
                len: full.len(),
            });
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            domain_len: domain.len(),
            name: full,
            tag,
            digest,
        })
    }
}

/// Splits `name` into registry host and path as Docker does: the first component is a
/// host only if it has a `.` or `:`, is `localhost`, or has uppercase letters (which a
/// path may not). `index.docker.io` is Docker Hub's old name.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            if first == "index.docker.io" {
                (DEFAULT_DOMAIN, rest)
            } else {
                (first, rest)
            }
        }
        _ => (DEFAULT_DOMAIN, name),
    }
}

/// `host[:port]`, where host is dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?`
/// labels or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = domain.starts_with('[')
        || host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    port_ok && host_ok
}

/// `[a-z0-9]+` runs joined by exactly one separator: `.`, `_`, `__` or a run of `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX_LEN
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

impl fmt::Display for ImageRef {
    /// The canonical full form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ImageRef, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        s.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("someone/tool:1.0"), "docker.io/someone/tool:1.0");
        assert_eq!(
            canon("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(canon("localhost/x"), "localhost/x:latest");
        assert_eq!(canon("localhost:5000/x/y:v2"), "localhost:5000/x/y:v2");
        assert_eq!(canon("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(canon("[::1]:5000/app:t"), "[::1]:5000/app:t");
        assert_eq!(canon("Registry.Example/app"), "Registry.Example/app:latest");
        // "localhost:5000" alone is repository "localhost" with tag "5000", as in Docker.
        assert_eq!(canon("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests_and_tags() {
        let d = Digest::of(b"x");
        let r: ImageRef = format!("busybox@{d}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        let both: ImageRef = format!("localhost:5000/x:1@{d}").parse().unwrap();
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.digest(), Some(&d));
        assert_eq!(both.to_string(), format!("localhost:5000/x:1@{d}"));
        assert_eq!(
            both.with_tag("2").unwrap().to_string(),
            "localhost:5000/x:2"
        );
    }

    #[test]
    fn familiar_names() {
        let f = |s: &str| s.parse::<ImageRef>().unwrap().familiar().to_owned();
        assert_eq!(f("busybox"), "busybox");
        assert_eq!(f("docker.io/library/busybox:1"), "busybox");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b");
        assert_eq!(f("someone/tool"), "someone/tool");
        assert_eq!(f("localhost:5000/x"), "localhost:5000/x");
        let r: ImageRef = "localhost:5000/x".parse().unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.name()),
            ("localhost:5000", "x", "localhost:5000/x")
        );
    }

    #[test]
    fn rejects_bad_references() {
        let e = |s: &str| s.parse::<ImageRef>().unwrap_err();
        assert_eq!(e(""), RefError::Empty);
        assert!(matches!(e("Busybox"), RefError::Uppercase { .. }));
        assert!(matches!(e("x/Busybox"), RefError::Uppercase { .. }));
        assert!(matches!(e(&"f".repeat(64)), RefError::HexIdentifier { .. }));
        assert!(matches!(e("busybox:"), RefError::InvalidTag { .. }));
        assert!(matches!(e("busybox:-x"), RefError::InvalidTag { .. }));
        assert!(matches!(
            e(&format!("b:{}", "t".repeat(129))),
            RefError::InvalidTag { .. }
        ));
        assert!(format!("b:{}", "t".repeat(128)).parse::<ImageRef>().is_ok());
        assert!(matches!(
            e("busybox@sha256:xyz"),
            RefError::InvalidDigest { .. }
        ));
        assert!(matches!(e("a//b"), RefError::InvalidPathComponent { .. }));
        assert!(matches!(e("a/b_-c"), RefError::InvalidPathComponent { .. }));
        assert!(matches!(
            e("a/b___c"),
            RefError::InvalidPathComponent { .. }
        ));
        assert!(matches!(e("a/-b"), RefError::InvalidPathComponent { .. }));
        assert!(matches!(e("host:port/x"), RefError::InvalidDomain { .. }));
        assert!(matches!(e("-bad.host/x"), RefError::InvalidDomain { .. }));
        assert!(matches!(e("[::zz]:5/x"), RefError::InvalidDomain { .. }));
        assert!("a/b__c/d--e/f.g".parse::<ImageRef>().is_ok());
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(e(&long), RefError::NameTooLong { len: 262, .. }));
        let msg = e("x/Busybox").to_string();
        assert!(
            msg.contains("\"x/Busybox\"") && msg.contains("lowercase"),
            "{msg}"
        );
    }

    #[test]
    fn serde_round_trip() {
        let r: ImageRef = "localhost:5000/x:1".parse().unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"localhost:5000/x:1\"");
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), r);
    }
}
