//! The generated `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! They are written into the bundle directory and bind-mounted read-only over the
//! rootfs, so what a step sees is kiln's and never lands in its layer (Docker and
//! BuildKit do the same). The contents are pure functions of the request and the host's
//! `resolv.conf`, so they are tested as strings.

use crate::request::NetworkMode;

/// `/etc/hosts`: loopback names plus the container's hostname.
pub(crate) fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// `/etc/hostname`.
pub(crate) fn hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// `/etc/resolv.conf` from the host's: as it is when the container shares the host's
/// network, without `nameserver` lines when it has none.
pub(crate) fn resolv_conf(host: &str, network: NetworkMode) -> String {
    match network {
        NetworkMode::Sandbox | NetworkMode::Host => {
            let mut out = host.to_owned();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out
        }
        NetworkMode::None => host
            .lines()
            .filter(|line| line.split_whitespace().next() != Some("nameserver"))
            .map(|line| format!("{line}\n"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str =
        "# generated\nsearch example.org\nnameserver 10.0.0.1\n  nameserver ::1\noptions ndots:2";

    #[test]
    fn hosts_names_localhost_and_the_hostname() {
        assert_eq!(
            hosts("kilnsandbox"),
            "127.0.0.1\tlocalhost kilnsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert_eq!(hostname("box"), "box\n");
    }

    #[test]
    fn shared_networks_keep_the_hosts_resolver() {
        let want = format!("{HOST}\n");
        assert_eq!(resolv_conf(HOST, NetworkMode::Sandbox), want);
        assert_eq!(resolv_conf(HOST, NetworkMode::Host), want);
        assert_eq!(resolv_conf("", NetworkMode::Host), "");
    }

    #[test]
    fn no_network_has_no_nameservers() {
        assert_eq!(
            resolv_conf(HOST, NetworkMode::None),
            "# generated\nsearch example.org\noptions ndots:2\n"
        );
    }
}
