//! The image configuration as Docker and BuildKit write it.
//!
//! The OCI image spec's configuration lacks fields Docker images carry and `docker
//! build` users rely on — `Healthcheck`, `OnBuild`, `Shell` — so this type is the
//! superset, with Docker's JSON field names and its "omit when empty" rules. Fields
//! this type does not know (such as the legacy `container_config`) are dropped on
//! reading, as BuildKit drops them when it builds on a base image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Platform;

/// An image configuration blob.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The author (`MAINTAINER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// How containers from the image run.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers, by diff ID.
    pub rootfs: RootFs,
    /// One entry per instruction that made the image, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Cache records for the image's own layers, written by `--cache-to type=inline`
    /// (the format is kiln-cache's; see `docs/remote-cache.md`). Never inherited by
    /// images built on this one.
    #[serde(
        rename = "kiln.cache.v1",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfig {
    /// The platform the configuration names; `None` when it names no OS or no
    /// architecture (such an image is taken for any platform).
    pub fn platform(&self) -> Option<Platform> {
        Platform::named(&self.os, &self.architecture, self.variant.as_deref())
    }

    /// An empty configuration for `platform` (what `FROM scratch` starts from).
    pub fn for_platform(platform: &Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture().to_owned(),
            os: platform.os().to_owned(),
            variant: platform.variant().map(str::to_owned),
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: Vec::new(),
            },
            ..ImageConfig::default()
        }
    }
}

/// The `config` object: defaults for containers run from the image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`, as `port/proto` keys of empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    /// `ENV`, as `KEY=value` in definition order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`, as path keys of empty objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, EmptyObject>>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Set by Windows builds; kept when a base image has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
}

impl ContainerConfig {
    /// The value of an environment variable, as the last `KEY=` entry gives it.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().flatten().rev().find_map(|entry| {
            let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets an environment variable, replacing an earlier definition in place as
    /// Docker does.
    pub fn set_env_var(&mut self, key: &str, value: &str) {
        let env = self.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
}

/// `{}` in JSON: the value type of Docker's port and volume sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// A health check, durations in nanoseconds as Docker stores them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// Failures in a row before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The `rootfs` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed digests of the layers, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<crate::Digest>,
}

/// One history entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, as BuildKit describes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment (`buildkit.dockerfile.v0` for Dockerfile steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether the step produced no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_configs_and_writes_them_back_without_empty_fields() {
        let json = r#"{
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "container_config": {"Hostname": "x"},
            "config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 30000000000},
                       "OnBuild": ["RUN echo hi"], "Shell": ["/bin/sh", "-c"], "ExposedPorts": {"80/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ENV A=1", "empty_layer": true}]
        }"#;
        let config: ImageConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.config.env_var("A"), Some("1"));
        assert_eq!(
            config.config.healthcheck.as_ref().unwrap().interval,
            30_000_000_000
        );
        let out = serde_json::to_value(&config).unwrap();
        assert!(out.get("container_config").is_none());
        assert!(out["config"].get("Entrypoint").is_none());
        assert!(out["config"]["Healthcheck"].get("Timeout").is_none());
        assert_eq!(out["history"][0]["empty_layer"], true);
        assert_eq!(out["config"]["OnBuild"][0], "RUN echo hi");
    }

    #[test]
    fn env_is_replaced_in_place() {
        let mut c = ContainerConfig::default();
        c.set_env_var("PATH", "/bin");
        c.set_env_var("A", "1");
        c.set_env_var("PATH", "/usr/bin:/bin");
        assert_eq!(c.env.unwrap(), ["PATH=/usr/bin:/bin", "A=1"]);
    }
}
