//! Where registry credentials come from and go to: Docker's `config.json` and its
//! credential helpers, read and written the way the `docker` CLI does, so that
//! `docker login` and `kiln login` share one set of credentials.
//!
//! Lookup for a host: `credHelpers[host]`, else `credsStore`, names a helper
//! `docker-credential-<name>` that is asked with `get`; when there is no helper, or it
//! has nothing for the host, the `auths` entry is used (`auth` as base64 `user:password`,
//! or `username`/`password`, or `identitytoken`). Docker Hub's key is
//! `https://index.docker.io/v1/`; other keys are matched on their host, with or without
//! a scheme. Writes keep every key of the file kiln does not know, and replace the file
//! atomically (temp file, mode 0600, rename).

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::RegistryError;

/// The `auths` key Docker uses for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Username a credential helper returns for an identity (refresh) token.
const TOKEN_USERNAME: &str = "<token>";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A user name and password (or personal access token), sent as HTTP basic auth or
    /// to a token endpoint.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Where credentials were stored by [`store_credentials`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredWhere {
    /// In the `auths` section of this config file.
    File(PathBuf),
    /// In this credential helper (`docker-credential-<name>`).
    Helper(String),
}

/// Where a [`RegistryClient`](super::RegistryClient) gets credentials from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    source: Source,
    helper_path: Option<OsString>,
}

#[derive(Clone, PartialEq, Eq)]
enum Source {
    None,
    /// A docker config file, read at lookup time; `None` when its location is unknown.
    DockerConfig(Option<PathBuf>),
    Explicit {
        host: String,
        auth: Auth,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::None => f.write_str("None"),
            Source::DockerConfig(p) => write!(f, "DockerConfig({p:?})"),
            Source::Explicit { host, auth } => write!(f, "Explicit({host}, {auth:?})"),
        }
    }
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials::docker_config()
    }
}

impl Credentials {
    /// The user's docker config: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`. A missing file means no credentials.
    pub fn docker_config() -> Credentials {
        Credentials {
            source: Source::DockerConfig(default_config_path()),
            helper_path: None,
        }
    }

    /// The docker config file at `path`.
    pub fn from_path(path: impl Into<PathBuf>) -> Credentials {
        Credentials {
            source: Source::DockerConfig(Some(path.into())),
            helper_path: None,
        }
    }

    /// No credentials: anonymous access only.
    pub fn none() -> Credentials {
        Credentials {
            source: Source::None,
            helper_path: None,
        }
    }

    /// A user name and password for `host` (`localhost:5000`, `docker.io`); other hosts
    /// get none.
    pub fn basic(host: &str, username: &str, password: &str) -> Credentials {
        Credentials {
            source: Source::Explicit {
                host: host.to_owned(),
                auth: Auth::Basic {
                    username: username.to_owned(),
                    password: password.to_owned(),
                },
            },
            helper_path: None,
        }
    }

    /// Looks credential helpers up in `path` (a `PATH`-style list of directories) instead
    /// of the process's `PATH`; helpers run with it in front of the inherited `PATH`.
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> Credentials {
        self.helper_path = Some(path.into());
        self
    }

    /// The config file these credentials read, if they come from one.
    pub fn config_path(&self) -> Option<&Path> {
        match &self.source {
            Source::DockerConfig(p) => p.as_deref(),
            _ => None,
        }
    }

    /// The credentials for registry `host` (`host[:port]` as in an image reference), if any.
    /// May run a credential helper.
    pub fn lookup(&self, host: &str) -> Result<Option<Auth>, RegistryError> {
        match &self.source {
            Source::None => Ok(None),
            Source::Explicit { host: h, auth } => {
                Ok((config_key(h) == config_key(host)).then(|| auth.clone()))
            }
            Source::DockerConfig(None) => Ok(None),
            Source::DockerConfig(Some(path)) => {
                let Some(config) = read_config(path)? else {
                    return Ok(None);
                };
                let key = config_key(host);
                if let Some(helper) = helper_for(&config, &key)
                    && let Some(auth) = self.helper_get(&helper, &key)?
                {
                    return Ok(Some(auth));
                }
                auths_entry(path, &config, &key)
            }
        }
    }

    /// Stores `username`/`password` for `host`: in the credential helper the config
    /// names for it, else in the config file's `auths`.
    pub fn store(
        &self,
        host: &str,
        username: &str,
        password: &str,
    ) -> Result<StoredWhere, RegistryError> {
        let path = self.writable_path()?;
        let mut config = read_config(&path)?.unwrap_or_default();
        let key = config_key(host);
        if let Some(helper) = helper_for(&config, &key) {
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": username,
                "Secret": password,
            });
            self.run_helper(&helper, "store", input.to_string().as_bytes())?;
            return Ok(StoredWhere::Helper(helper));
        }
        let auths = object_field(&mut config, "auths");
        auths.retain(|k, _| config_key(k) != key);
        let mut entry = Map::new();
        entry.insert(
            "auth".to_owned(),
            Value::String(BASE64.encode(format!("{username}:{password}"))),
        );
        auths.insert(key, Value::Object(entry));
        write_config(&path, &config)?;
        Ok(StoredWhere::File(path))
    }

    /// Removes the credentials for `host` from the config file and from its credential
    /// helper; true if there were any.
    pub fn erase(&self, host: &str) -> Result<bool, RegistryError> {
        let path = self.writable_path()?;
        let Some(mut config) = read_config(&path)? else {
            return Ok(false);
        };
        let key = config_key(host);
        let mut erased = false;
        if let Some(helper) = helper_for(&config, &key) {
            match self.run_helper(&helper, "erase", key.as_bytes()) {
                Ok(_) => erased = true,
                Err(RegistryError::Helper { message, .. }) if is_not_found(&message) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(Value::Object(auths)) = config.get_mut("auths") {
            let before = auths.len();
            auths.retain(|k, _| config_key(k) != key);
            if auths.len() != before {
                erased = true;
                write_config(&path, &config)?;
            }
        }
        Ok(erased)
    }

    fn writable_path(&self) -> Result<PathBuf, RegistryError> {
        match &self.source {
            Source::DockerConfig(Some(p)) => Ok(p.clone()),
            _ => default_config_path().ok_or(RegistryError::NoConfigDir),
        }
    }

    fn helper_get(&self, helper: &str, key: &str) -> Result<Option<Auth>, RegistryError> {
        let out = match self.run_helper(helper, "get", key.as_bytes()) {
            Ok(out) => out,
            Err(RegistryError::Helper { message, .. }) if is_not_found(&message) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: Answer = serde_json::from_slice(&out).map_err(|e| RegistryError::Helper {
            helper: helper.to_owned(),
            action: "get",
            message: format!("unreadable answer: {e}"),
        })?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == TOKEN_USERNAME {
            Auth::IdentityToken(answer.secret)
        } else {
            Auth::Basic {
                username: answer.username,
                password: answer.secret,
            }
        }))
    }

    /// Runs `docker-credential-<helper> <action>` with `input` on stdin; its stdout on
    /// success, else an error carrying its output.
    fn run_helper(
        &self,
        helper: &str,
        action: &'static str,
        input: &[u8],
    ) -> Result<Vec<u8>, RegistryError> {
        let program = format!("docker-credential-{helper}");
        let spawn_err = |source| RegistryError::HelperSpawn {
            helper: helper.to_owned(),
            source,
        };
        let mut cmd = match &self.helper_path {
            Some(dirs) => {
                let found = std::env::split_paths(dirs)
                    .map(|d| d.join(&program))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        spawn_err(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not found in the helper search path",
                        ))
                    })?;
                let mut path = dirs.clone();
                if let Some(inherited) = std::env::var_os("PATH") {
                    path.push(":");
                    path.push(inherited);
                }
                let mut cmd = Command::new(found);
                cmd.env("PATH", path);
                cmd
            }
            None => Command::new(&program),
        };
        let mut child = cmd
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input closes the pipe; its exit
            // status tells what happened.
            let _ = stdin.write_all(input);
        }
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_end(&mut stdout).map_err(spawn_err)?;
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_end(&mut stderr).map_err(spawn_err)?;
        }
        let status = child.wait().map_err(spawn_err)?;
        if status.success() {
            return Ok(stdout);
        }
        let text = if stdout.iter().all(u8::is_ascii_whitespace) {
            stderr
        } else {
            stdout
        };
        Err(RegistryError::Helper {
            helper: helper.to_owned(),
            action,
            message: format!(
                "{status}: {}",
                String::from_utf8_lossy(&text)
                    .trim()
                    .chars()
                    .take(500)
                    .collect::<String>()
            ),
        })
    }
}

/// Stores credentials for `host` for `kiln login`: in the credential helper the config
/// names for the host, else in `auths` of the config file at `config_path` (default:
/// the user's docker config).
pub fn store_credentials(
    config_path: Option<&Path>,
    host: &str,
    user: &str,
    password: &str,
) -> Result<StoredWhere, RegistryError> {
    config_at(config_path).store(host, user, password)
}

/// Erases the credentials for `host` for `kiln logout`; true if there were any.
pub fn erase_credentials(config_path: Option<&Path>, host: &str) -> Result<bool, RegistryError> {
    config_at(config_path).erase(host)
}

fn config_at(config_path: Option<&Path>) -> Credentials {
    match config_path {
        Some(p) => Credentials::from_path(p),
        None => Credentials::docker_config(),
    }
}

fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The config key for a registry host: Docker Hub's legacy URL for Docker Hub, else the
/// bare `host[:port]` (a scheme or path in `host` is dropped).
pub fn config_key(host: &str) -> String {
    let bare = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let bare = bare.split('/').next().unwrap_or(bare);
    match bare {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB_KEY.to_owned()
        }
        _ => bare.to_owned(),
    }
}

fn read_config(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RegistryError::ConfigRead {
                path: path.to_owned(),
                source,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RegistryError::ConfigParse {
            path: path.to_owned(),
            source,
        })
}

fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    let named = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if let Some(Value::Object(helpers)) = config.get("credHelpers")
        && let Some(h) = helpers
            .iter()
            .find(|(k, _)| config_key(k) == key)
            .and_then(|(_, v)| named(Some(v)))
    {
        return Some(h);
    }
    named(config.get("credsStore"))
}

fn auths_entry(
    path: &Path,
    config: &Map<String, Value>,
    key: &str,
) -> Result<Option<Auth>, RegistryError> {
    let Some(Value::Object(auths)) = config.get("auths") else {
        return Ok(None);
    };
    // An exact key wins over one that only matches after normalisation.
    let entry = auths.get(key).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| config_key(k) == key)
            .map(|(_, v)| v)
    });
    let Some(Value::Object(entry)) = entry else {
        return Ok(None);
    };
    let text = |name: &str| match entry.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if let Some(token) = text("identitytoken") {
        return Ok(Some(Auth::IdentityToken(token)));
    }
    if let Some(encoded) = text("auth") {
        let bad = || RegistryError::ConfigAuth {
            path: path.to_owned(),
            key: key.to_owned(),
        };
        let decoded = BASE64.decode(encoded.trim()).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Auth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (text("username"), text("password")) {
        (Some(username), Some(password)) => Ok(Some(Auth::Basic { username, password })),
        _ => Ok(None),
    }
}

fn object_field<'a>(config: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    let slot = config
        .entry(name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("the slot was just made an object"),
    }
}

/// Writes `config` to `path` through a temp file in the same directory (mode 0600) and a
/// rename, so a reader never sees half a file.
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<(), RegistryError> {
    let err = |source| RegistryError::ConfigWrite {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let mut bytes = serde_json::to_vec_pretty(config).map_err(|e| err(e.into()))?;
    bytes.push(b'\n');
    // tempfile creates with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(&bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn is_not_found(message: &str) -> bool {
    message.contains("credentials not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_docker_hub_and_schemes() {
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("https://index.docker.io/v1/"), DOCKER_HUB_KEY);
        assert_eq!(config_key("https://localhost:5000"), "localhost:5000");
        assert_eq!(config_key("http://r.example/v2/"), "r.example");
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn reads_every_auths_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = BASE64.encode("u1:p:1");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{
                    "https://one.example": {{"auth": "{auth}"}},
                    "two.example": {{"username": "u2", "password": "p2"}},
                    "three.example": {{"identitytoken": "tok"}},
                    "bad.example": {{"auth": "!!"}},
                    "https://index.docker.io/v1/": {{"auth": "{auth}"}}
                }}}}"#
            ),
        )
        .unwrap();
        let c = Credentials::from_path(&path);
        let basic = |u: &str, p: &str| {
            Some(Auth::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            })
        };
        assert_eq!(c.lookup("one.example").unwrap(), basic("u1", "p:1"));
        assert_eq!(c.lookup("two.example").unwrap(), basic("u2", "p2"));
        assert_eq!(
            c.lookup("three.example").unwrap(),
            Some(Auth::IdentityToken("tok".to_owned()))
        );
        assert_eq!(c.lookup("docker.io").unwrap(), basic("u1", "p:1"));
        assert_eq!(c.lookup("four.example").unwrap(), None);
        assert!(matches!(
            c.lookup("bad.example"),
            Err(RegistryError::ConfigAuth { .. })
        ));
        let missing = Credentials::from_path(dir.path().join("nope.json"));
        assert_eq!(missing.lookup("one.example").unwrap(), None);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            c.lookup("one.example"),
            Err(RegistryError::ConfigParse { .. })
        ));
    }

    #[test]
    fn explicit_credentials_apply_to_their_host_only() {
        let c = Credentials::basic("localhost:5000", "u", "hunter2");
        assert!(c.lookup("localhost:5000").unwrap().is_some());
        assert!(c.lookup("localhost:5001").unwrap().is_none());
        assert!(Credentials::none().lookup("x").unwrap().is_none());
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
