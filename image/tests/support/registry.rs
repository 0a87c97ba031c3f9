//! A throw-away registry for tests: Debian's `docker-registry` on 127.0.0.1 with a free
//! port, temp storage and a temp config, optionally behind htpasswd basic auth. It is
//! killed when dropped.
//!
//! Uses only std, so any test suite can include it with `#[path]`. A missing binary
//! fails the test with the package to install; nothing is skipped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary Debian's `docker-registry` package installs.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct TestRegistry {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TestRegistry {
    /// A registry without authentication.
    pub fn start() -> TestRegistry {
        TestRegistry::launch(None)
    }

    /// A registry that wants HTTP basic auth with `user`/`password` (bcrypt htpasswd
    /// made by `htpasswd` from `apache2-utils`).
    pub fn start_with_auth(user: &str, password: &str) -> TestRegistry {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run htpasswd ({e}): install the Debian package apache2-utils (scripts/install-deps)")
            });
        assert!(
            out.status.success(),
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestRegistry::launch(Some(out.stdout))
    }

    fn launch(htpasswd: Option<Vec<u8>>) -> TestRegistry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install the Debian package docker-registry (scripts/install-deps)"
        );
        let dir = unique_dir("kiln-registry");
        std::fs::create_dir_all(dir.join("storage")).expect("create registry storage");
        let mut last_log = String::new();
        // The free port found below may be taken by someone else before the registry
        // binds it; try a few.
        for _ in 0..5 {
            let port = free_port();
            let auth = match &htpasswd {
                Some(line) => {
                    let path = dir.join("htpasswd");
                    std::fs::write(&path, line).expect("write htpasswd");
                    format!(
                        "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                        path.display()
                    )
                }
                None => String::new(),
            };
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n\
                 {auth}",
                dir.join("storage").display()
            );
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log_path = dir.join("registry.log");
            let log = std::fs::File::create(&log_path).expect("create registry log");
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config_path)
                .env_remove("REGISTRY_HTTP_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BIN}: {e}"));
            if wait_ready(&mut child, port, Duration::from_secs(20)) {
                return TestRegistry { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("docker-registry did not come up; its log:\n{last_log}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `127.0.0.1:<port>`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }
}

/// Waits until the registry at `port` answers `/v2/`; false if it exits or time runs out.
fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Some(status) = http_status(port, "/v2/")
            && (status == 200 || status == 401)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The status of `GET path` on 127.0.0.1:`port`, if anything answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn unique_dir(prefix: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()))
}
