//! `RUN --mount=<csv>` values, validated by BuildKit's rules.
//!
//! A mount is one CSV record of `key=value` fields (plus the bare flags `ro`, `rw`,
//! `readonly`, `readwrite` and, for secret and ssh mounts, `required`), read in order:
//! `type` defaults to `bind` and must come before the keys that depend on it. Values
//! may name build variables; BuildKit expands each field's value before checking it.
//! The parser cannot expand (ARG values are the solver's), so a mount with a `$` in it
//! reaches the AST unparsed and the solver calls [`Mount::parse_with`] with its
//! expander. `from` alone never expands: a stage name must be literal.

use std::borrow::Cow;

use serde::Serialize;

use crate::golang::parse_bool;
use crate::syntax::line::find_byte;

/// What a mount provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// Files from the context or another stage (read-only unless `rw`).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A build secret as a file (or environment variable).
    Secret,
    /// The SSH agent socket.
    Ssh,
}

impl MountType {
    fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Everyone writes at once.
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// One user at a time.
    Locked,
}

/// A validated `--mount`, its text borrowed from the value it was read from where
/// written there as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount<'a> {
    /// The mount type.
    pub kind: MountType,
    /// Where it appears in the container (`target`, `dst`, `destination`).
    pub target: Option<Cow<'a, str>>,
    /// The path in the source, or the secret's id (`source`, `src`).
    pub source: Option<Cow<'a, str>>,
    /// The stage or image to mount from.
    pub from: Option<Cow<'a, str>>,
    /// Mounted read-only (defaults: bind/secret/ssh read-only, cache/tmpfs writable).
    pub read_only: bool,
    /// Cache or secret id.
    pub id: Option<Cow<'a, str>>,
    /// Cache sharing mode.
    pub sharing: Option<CacheSharing>,
    /// A missing secret or SSH agent is an error.
    pub required: bool,
    /// File mode, octal.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// Environment variable a secret is exposed as.
    pub env: Option<Cow<'a, str>>,
}

/// Why a `--mount` value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// Not a CSV record.
    #[error("failed to parse csv mounts: {reason}")]
    Csv {
        /// What is wrong with the CSV.
        reason: &'static str,
    },
    /// A field without `=` that is not a bare flag.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// A key no mount takes.
    #[error("unexpected key '{key}' in '{field}'")]
    UnknownKey {
        /// The key, lowercased.
        key: String,
        /// The field.
        field: String,
    },
    /// A key this mount type does not take.
    #[error("unexpected key '{key}' for mount type '{kind}'")]
    KeyForType {
        /// The key, lowercased.
        key: String,
        /// The mount type.
        kind: &'static str,
    },
    /// `type=` something unknown.
    #[error("unsupported mount type {value:?}")]
    Type {
        /// The value given.
        value: String,
    },
    /// `sharing=` something unknown.
    #[error("unsupported sharing value {value:?}")]
    Sharing {
        /// The value given.
        value: String,
    },
    /// A boolean, number or size that does not parse.
    #[error("invalid value for {key}: {value}")]
    Value {
        /// The key, lowercased.
        key: String,
        /// The value given.
        value: String,
    },
    /// `from=$VAR`.
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromVariable,
    /// mode/uid/gid on a bind or tmpfs mount.
    #[error("{key} not allowed for {kind:?} type mounts")]
    FileInfoNotAllowed {
        /// The key.
        key: &'static str,
        /// The mount type.
        kind: &'static str,
    },
    /// `sharing=` on something other than a cache mount.
    #[error("invalid cache sharing set for {kind} mount")]
    SharingNotCache {
        /// The mount type.
        kind: &'static str,
    },
    /// `from=` on a secret mount.
    #[error("secret mount should not have a from")]
    SecretFrom,
    /// A secret mount with none of source, target, id, env.
    #[error("invalid secret mount; one of source, target required")]
    SecretTarget,
    /// A secret mount with both source and id.
    #[error("both source and id can't be set")]
    SecretSourceAndId,
    /// The solver's expander failed on a value.
    #[error("cannot expand {value:?}: {message}")]
    Expansion {
        /// The value.
        value: String,
        /// The expander's message.
        message: String,
    },
}

/// Splits one CSV record as Go's `encoding/csv` reads it (quoted fields with `""`
/// escapes, no bare quotes in unquoted fields).
fn csv_fields(input: &str) -> Result<Vec<Cow<'_, str>>, MountError> {
    if input.is_empty() {
        return Err(MountError::Csv { reason: "EOF" });
    }
    let mut fields = Vec::new();
    let mut rest = input;
    loop {
        let (field, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut field = String::new();
            let mut chars = quoted.char_indices();
            let after = loop {
                match chars.next() {
                    Some((i, '"')) => {
                        if quoted[i + 1..].starts_with('"') {
                            field.push('"');
                            chars.next();
                        } else {
                            break &quoted[i + 1..];
                        }
                    }
                    Some((_, c)) => field.push(c),
                    None => {
                        return Err(MountError::Csv {
                            reason: "extraneous or missing \" in quoted-field",
                        });
                    }
                }
            };
            if !(after.is_empty() || after.starts_with(',')) {
                return Err(MountError::Csv {
                    reason: "extraneous or missing \" in quoted-field",
                });
            }
            (Cow::Owned(field), after)
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            if rest[..end].contains('"') {
                return Err(MountError::Csv {
                    reason: "bare \" in non-quoted-field",
                });
            }
            (Cow::Borrowed(&rest[..end]), &rest[end..])
        };
        fields.push(field);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None => return Ok(fields),
        }
    }
}

/// A field's key, lowercased, and its value, which is borrowed from the record when the
/// field is.
fn split_field<'f, 'a>(field: &'f Cow<'a, str>) -> (Cow<'f, str>, Option<Cow<'a, str>>) {
    match field {
        Cow::Borrowed(field) => match find_byte(field, b'=') {
            Some(eq) => (
                lowercase(&field[..eq]),
                Some(Cow::Borrowed(&field[eq + 1..])),
            ),
            None => (lowercase(field), None),
        },
        Cow::Owned(field) => match find_byte(field, b'=') {
            Some(eq) => (
                lowercase(&field[..eq]),
                Some(Cow::Owned(field[eq + 1..].to_owned())),
            ),
            None => (lowercase(field), None),
        },
    }
}

/// The fields of a mount's CSV record: cut at commas when it holds no quote (the usual
/// case, where reading it as CSV changes nothing), else read as CSV in full first.
enum Fields<'a> {
    /// The fields not read yet (`None` after the last).
    Plain(Option<&'a str>),
    Quoted(std::vec::IntoIter<Cow<'a, str>>),
}

impl<'a> Fields<'a> {
    fn of(input: &'a str) -> Result<Fields<'a>, MountError> {
        if input.is_empty() || input.bytes().any(|b| b == b'"') {
            return Ok(Fields::Quoted(csv_fields(input)?.into_iter()));
        }
        Ok(Fields::Plain(Some(input)))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Cow<'a, str>> {
        match self {
            Fields::Plain(rest) => {
                let text = rest.take()?;
                let field = match find_byte(text, b',') {
                    Some(comma) => {
                        *rest = Some(&text[comma + 1..]);
                        &text[..comma]
                    }
                    None => text,
                };
                Some(Cow::Borrowed(field))
            }
            Fields::Quoted(fields) => fields.next(),
        }
    }
}

/// docker/go-units `RAMInBytes`: `<number>[.<digits>] ?[kmgtp]?i?b?`, binary multiples.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let num_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_len);
    let int_part = num.split('.').next()?;
    if int_part.is_empty() || num.matches('.').count() > 1 || num.ends_with('.') {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let value: f64 = num.parse().ok()?;
    Some((value * (1u64 << shift) as f64) as u64)
}

/// `text` lowercased (Unicode-wise, as Go's `strings.ToLower`), borrowed when that
/// changes nothing.
fn lowercase(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// BuildKit's `\$.` test for a variable reference.
fn names_variable(value: &str) -> bool {
    value.find('$').is_some_and(|i| i + 1 < value.len())
}

/// What can be checked of a mount whose values name variables, before expansion: the
/// CSV shape, and that `from` is literal.
pub(crate) fn check_unexpanded(spec: &str) -> Result<(), MountError> {
    for field in Fields::of(spec)? {
        if let Some((key, value)) = field.split_once('=')
            && key.eq_ignore_ascii_case("from")
            && names_variable(value)
        {
            return Err(MountError::FromVariable);
        }
    }
    Ok(())
}

impl<'a> Mount<'a> {
    /// Parses a mount written without variables.
    pub fn parse(spec: &'a str) -> Result<Mount<'a>, MountError> {
        Mount::parse_fields(spec, |value| Ok(value.clone()))
    }

    /// Parses a mount, passing every field value but `from` through `expand` first
    /// (the solver's shell expander with the build's ARG/ENV values).
    pub fn parse_with(
        spec: &'a str,
        mut expand: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount<'a>, MountError> {
        Mount::parse_fields(spec, |value| expand(value).map(Cow::Owned))
    }

    /// The same mount with text of its own.
    pub fn into_owned(self) -> Mount<'static> {
        let own = |text: Option<Cow<'_, str>>| text.map(|t| Cow::Owned(t.into_owned()));
        Mount {
            target: own(self.target),
            source: own(self.source),
            from: own(self.from),
            id: own(self.id),
            env: own(self.env),
            ..self
        }
    }

    /// [`Mount::parse_with`] with an expander that may give the value back as it is.
    fn parse_fields(
        spec: &'a str,
        mut expand: impl FnMut(&Cow<'a, str>) -> Result<Cow<'a, str>, String>,
    ) -> Result<Mount<'a>, MountError> {
        let mut m = Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            read_only: true,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let mut read_only: Option<bool> = None;
        for field in Fields::of(spec)? {
            let (key, value) = split_field(&field);
            let secretish = matches!(m.kind, MountType::Secret | MountType::Ssh);
            let Some(raw) = value else {
                match &*key {
                    "readonly" | "ro" => read_only = Some(true),
                    "readwrite" | "rw" => read_only = Some(false),
                    "required" if secretish => m.required = true,
                    "required" => {
                        return Err(MountError::KeyForType {
                            key: key.into_owned(),
                            kind: m.kind.name(),
                        });
                    }
                    _ => {
                        return Err(MountError::NotKeyValue {
                            field: field.into_owned(),
                        });
                    }
                }
                continue;
            };
            let value = if key == "from" {
                if names_variable(&raw) {
                    return Err(MountError::FromVariable);
                }
                raw
            } else {
                expand(&raw).map_err(|message| MountError::Expansion {
                    value: raw.into_owned(),
                    message,
                })?
            };
            let bad_value = |key: &str| MountError::Value {
                key: key.to_owned(),
                value: value.clone().into_owned(),
            };
            match &*key {
                "type" => {
                    m.kind = match &*lowercase(&value) {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            return Err(MountError::Type {
                                value: value.into_owned(),
                            });
                        }
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    read_only = Some(parse_bool(&value).ok_or_else(|| bad_value(&key))?)
                }
                "readwrite" | "rw" => {
                    read_only = Some(!parse_bool(&value).ok_or_else(|| bad_value(&key))?);
                }
                "required" if secretish => {
                    m.required = parse_bool(&value).ok_or_else(|| bad_value(&key))?;
                }
                "required" => {
                    return Err(MountError::KeyForType {
                        key: key.into_owned(),
                        kind: m.kind.name(),
                    });
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match &*lowercase(&value) {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            return Err(MountError::Sharing {
                                value: value.into_owned(),
                            });
                        }
                    })
                }
                "mode" => {
                    m.mode = Some(u32::from_str_radix(&value, 8).map_err(|_| bad_value(&key))?)
                }
                "uid" => m.uid = Some(value.parse().map_err(|_| bad_value(&key))?),
                "gid" => m.gid = Some(value.parse().map_err(|_| bad_value(&key))?),
                "size" if m.kind == MountType::Tmpfs => {
                    m.size = Some(ram_in_bytes(&value).ok_or_else(|| bad_value(&key))?);
                }
                "size" => {
                    return Err(MountError::KeyForType {
                        key: key.into_owned(),
                        kind: m.kind.name(),
                    });
                }
                "env" => m.env = Some(value),
                _ => {
                    return Err(MountError::UnknownKey {
                        key: key.into_owned(),
                        field: field.into_owned(),
                    });
                }
            }
        }
        m.validate(read_only)?;
        Ok(m)
    }

    fn validate(&mut self, read_only: Option<bool>) -> Result<(), MountError> {
        let kind = self.kind.name();
        let file_info_allowed = matches!(
            self.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        for (key, set) in [
            ("mode", self.mode.is_some()),
            ("uid", self.uid.is_some()),
            ("gid", self.gid.is_some()),
        ] {
            if set && !file_info_allowed {
                return Err(MountError::FileInfoNotAllowed { key, kind });
            }
        }
        self.read_only =
            read_only.unwrap_or(!matches!(self.kind, MountType::Cache | MountType::Tmpfs));
        if self.sharing.is_some() && self.kind != MountType::Cache {
            return Err(MountError::SharingNotCache { kind });
        }
        if self.kind == MountType::Secret {
            if self.from.is_some() {
                return Err(MountError::SecretFrom);
            }
            if self.source.is_none()
                && self.target.is_none()
                && self.id.is_none()
                && self.env.is_none()
            {
                return Err(MountError::SecretTarget);
            }
            if self.source.is_some() && self.id.is_some() {
                return Err(MountError::SecretSourceAndId);
            }
        }
        if self.env.is_some() && self.kind != MountType::Secret {
            return Err(MountError::KeyForType {
                key: "env".to_owned(),
                kind,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_with_options() {
        let m =
            Mount::parse("type=cache,target=/root/.cache,sharing=locked,id=go,mode=0700,uid=1000")
                .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid), (Some(0o700), Some(1000)));
        assert!(!m.read_only);
    }

    #[test]
    fn defaults_and_bare_flags() {
        let bind = Mount::parse("target=/src,from=build,source=/out").unwrap();
        assert!(bind.read_only && bind.kind == MountType::Bind);
        assert!(!Mount::parse("target=/src,rw").unwrap().read_only);
        assert!(
            !Mount::parse("target=/src,readwrite=true")
                .unwrap()
                .read_only
        );
        let secret = Mount::parse("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(secret.required && secret.read_only);
        let tmp = Mount::parse("type=tmpfs,dst=/t,size=64m").unwrap();
        assert_eq!(tmp.size, Some(64 << 20));
        assert_eq!(
            Mount::parse("\"type=ssh\",required=true").unwrap().kind,
            MountType::Ssh
        );
    }

    #[test]
    fn rejections() {
        let err = |s: &str| Mount::parse(s).unwrap_err();
        assert!(matches!(err("type=volume"), MountError::Type { .. }));
        assert!(matches!(
            err("target=/x,sharing=nope"),
            MountError::Sharing { .. }
        ));
        assert!(matches!(
            err("target=/x,sharing=shared"),
            MountError::SharingNotCache { .. }
        ));
        assert!(matches!(
            err("target=/x,bogus=1"),
            MountError::UnknownKey { .. }
        ));
        assert!(matches!(err("target"), MountError::NotKeyValue { .. }));
        assert!(matches!(
            err("required,type=secret"),
            MountError::KeyForType { .. }
        ));
        assert!(matches!(
            err("target=/x,mode=0644"),
            MountError::FileInfoNotAllowed { .. }
        ));
        assert!(matches!(err("type=secret"), MountError::SecretTarget));
        assert!(matches!(
            err("type=secret,id=a,src=b"),
            MountError::SecretSourceAndId
        ));
        assert!(matches!(
            err("type=secret,id=a,from=b"),
            MountError::SecretFrom
        ));
        assert!(matches!(
            err("type=cache,target=/x,uid=abc"),
            MountError::Value { .. }
        ));
        assert!(matches!(
            err("target=/x,from=$STAGE"),
            MountError::FromVariable
        ));
        assert!(matches!(
            err("target=/x,ro=maybe"),
            MountError::Value { .. }
        ));
        assert!(matches!(
            err("type=tmpfs,target=/x,size=big"),
            MountError::Value { .. }
        ));
        assert!(matches!(
            err("type=cache,size=1m"),
            MountError::KeyForType { .. }
        ));
        assert!(matches!(err(""), MountError::Csv { .. }));
        assert!(matches!(err("target=a\"b"), MountError::Csv { .. }));
    }

    #[test]
    fn expansion_happens_per_value() {
        let m = Mount::parse_with(
            "type=cache,target=$DIR",
            |v| Ok(v.replace("$DIR", "/cache")),
        )
        .unwrap();
        assert_eq!(m.target.as_deref(), Some("/cache"));
    }
}
