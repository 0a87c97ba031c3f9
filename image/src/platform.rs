//! Platforms (`linux/amd64`, `linux/arm/v7`) as users write them and as image indexes
//! record them.
//!
//! Parsing and normalisation follow containerd's `platforms` package, which BuildKit and
//! Docker use: names are lowercased, aliases fold onto Go's names (`x86_64`→`amd64`,
//! `aarch64`→`arm64`, `armhf`→`arm/v7`, `macos`→`darwin`), `arm` without a variant is
//! `arm/v7`, and `arm64/v8` is plain `arm64`. A [`Platform`] always holds the normalised
//! form, so `==` is platform matching and `Display` is the canonical specifier.
//! A lone OS (`linux`) takes the host's architecture; a lone architecture (`arm64`) takes
//! the host's OS.

use std::fmt;
use std::str::FromStr;

use oci_spec::image as oci;

/// A normalised `os/architecture[/variant]` triple.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

/// Why a string is not a platform specifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    /// The specifier is empty or has an empty component.
    #[error("platform {0:?} has an empty component")]
    EmptyComponent(String),
    /// A component has characters other than `[A-Za-z0-9_-]`.
    #[error(
        "platform {specifier:?}: component {component:?} may only contain letters, digits, '_' and '-'"
    )]
    InvalidComponent {
        /// The input.
        specifier: String,
        /// The offending component.
        component: String,
    },
    /// More than `os/arch/variant`.
    #[error("platform {0:?} has more than three components (os/arch/variant)")]
    TooManyComponents(String),
    /// A single component that is neither a known OS nor a known architecture.
    #[error("platform {0:?} is neither a known operating system nor a known architecture")]
    Unknown(String),
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

impl Platform {
    /// A platform from its parts, normalised.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant.unwrap_or(""));
        Platform {
            os: normalize_os(os),
            architecture,
            variant: (!variant.is_empty()).then_some(variant),
        }
    }

    /// The platform an image configuration names, normalised; `None` when it names no
    /// OS or no architecture.
    pub fn named(os: &str, architecture: &str, variant: Option<&str>) -> Option<Platform> {
        (!os.is_empty() && !architecture.is_empty())
            .then(|| Platform::new(os, architecture, variant))
    }

    /// The platform this program runs on.
    pub fn host() -> Platform {
        use std::env::consts::{ARCH, OS};
        let little = cfg!(target_endian = "little");
        let arch = match ARCH {
            "x86" => "386",
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "loongarch64" => "loong64",
            "powerpc" => "ppc",
            "powerpc64" if little => "ppc64le",
            "powerpc64" => "ppc64",
            "mips" if little => "mipsle",
            "mips64" if little => "mips64le",
            other => other,
        };
        Platform::new(OS, arch, None)
    }

    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The CPU architecture, as Go names it (`amd64`, `arm64`).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The CPU variant (`v7` for 32-bit ARM), if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

fn normalize_os(os: &str) -> String {
    match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_owned(),
        other => other.to_owned(),
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_owned(),
                _ => variant,
            },
        ),
        "armhf" => ("arm", "v7".to_owned()),
        "armel" => ("arm", "v6".to_owned()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        _ => return (arch, variant),
    };
    (arch.to_owned(), variant)
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        for part in &parts {
            if part.is_empty() {
                return Err(PlatformError::EmptyComponent(s.to_owned()));
            }
            if !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(PlatformError::InvalidComponent {
                    specifier: s.to_owned(),
                    component: (*part).to_owned(),
                });
            }
        }
        match parts[..] {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    let host = Platform::host();
                    return Ok(Platform::new(&os, &host.architecture, host.variant()));
                }
                let candidate = Platform::new(std::env::consts::OS, one, None);
                if KNOWN_ARCH.contains(&candidate.architecture.as_str()) {
                    Ok(candidate)
                } else {
                    Err(PlatformError::Unknown(s.to_owned()))
                }
            }
            [os, arch] => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(PlatformError::TooManyComponents(s.to_owned())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<&oci::Platform> for Platform {
    /// Normalises a platform read from an image index or config.
    fn from(p: &oci::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }
}

impl From<&Platform> for oci::Platform {
    fn from(p: &Platform) -> oci::Platform {
        let mut out = oci::Platform::default();
        out.set_os(oci::Os::from(p.os.as_str()));
        out.set_architecture(oci::Arch::from(p.architecture.as_str()));
        out.set_variant(p.variant.clone());
        out
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        s.parse::<Platform>().unwrap().to_string()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(canon("linux/amd64"), "linux/amd64");
        assert_eq!(canon("Linux/X86_64"), "linux/amd64");
        assert_eq!(canon("linux/x86-64/v1"), "linux/amd64");
        assert_eq!(canon("linux/amd64/v3"), "linux/amd64/v3");
        assert_eq!(canon("linux/aarch64"), "linux/arm64");
        assert_eq!(canon("linux/arm64/v8"), "linux/arm64");
        assert_eq!(canon("linux/arm64/9"), "linux/arm64/v9");
        assert_eq!(canon("linux/arm"), "linux/arm/v7");
        assert_eq!(canon("linux/arm/6"), "linux/arm/v6");
        assert_eq!(canon("linux/armhf"), "linux/arm/v7");
        assert_eq!(canon("linux/armel"), "linux/arm/v6");
        assert_eq!(canon("linux/i386"), "linux/386");
        assert_eq!(canon("macos/arm64"), "darwin/arm64");
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap(),
            "linux/aarch64".parse::<Platform>().unwrap()
        );
    }

    #[test]
    fn single_components_fill_in_from_the_host() {
        let host = Platform::host();
        assert_eq!(
            "linux".parse::<Platform>().unwrap().architecture(),
            host.architecture()
        );
        let p: Platform = "aarch64".parse().unwrap();
        assert_eq!((p.os(), p.architecture()), (std::env::consts::OS, "arm64"));
        assert!(matches!(
            "plan10".parse::<Platform>(),
            Err(PlatformError::Unknown(_))
        ));
    }

    #[test]
    fn host_is_canonical() {
        let host = Platform::host();
        assert_eq!(host.to_string().parse::<Platform>().unwrap(), host);
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(host.to_string(), "linux/amd64");
    }

    #[test]
    fn rejects_malformed_specifiers() {
        let e = |s: &str| s.parse::<Platform>().unwrap_err();
        assert!(matches!(e(""), PlatformError::EmptyComponent(_)));
        assert!(matches!(e("linux/"), PlatformError::EmptyComponent(_)));
        assert!(matches!(
            e("linux/amd64/v1/x"),
            PlatformError::TooManyComponents(_)
        ));
        assert!(matches!(
            e("linux/am d64"),
            PlatformError::InvalidComponent { .. }
        ));
        assert!(matches!(
            e("linux/*"),
            PlatformError::InvalidComponent { .. }
        ));
    }

    #[test]
    fn converts_to_and_from_oci() {
        let p: Platform = "linux/arm/v7".parse().unwrap();
        let o = oci::Platform::from(&p);
        assert_eq!(o.os(), &oci::Os::Linux);
        assert_eq!(o.architecture(), &oci::Arch::ARM);
        assert_eq!(o.variant().as_deref(), Some("v7"));
        assert_eq!(Platform::from(&o), p);
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"architecture\":\"arm\""), "{json}");
    }
}
