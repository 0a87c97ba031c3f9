//! Network modes, hostname and the generated `/etc` files.

use kiln_executor::NetworkMode;

use crate::support::TestContext;

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn no_network_has_only_loopback_and_no_nameservers() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(
        ctx.request("cat /proc/net/dev; echo ---; cat /sys/class/net/lo/flags /etc/resolv.conf")
            .with_network(NetworkMode::None),
    );
    let (dev, resolv) = out.split_once("---\n").unwrap();
    assert_eq!(interfaces(dev), ["lo"]);
    let (flags, resolv) = resolv.split_once('\n').unwrap();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "loopback is not up: {flags:#x}");
    assert!(!resolv.contains("nameserver"), "{resolv}");
}

#[test]
fn the_sandbox_shares_the_hosts_network_with_its_own_hostname() {
    let ctx = TestContext::new();
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let out = ctx.stdout_of(
        ctx.request("cat /proc/net/dev; echo ---; hostname; cat /etc/hostname /etc/hosts")
            .with_hostname("builder"),
    );
    let (dev, rest) = out.split_once("---\n").unwrap();
    assert_eq!(interfaces(dev), interfaces(&host_dev));
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines[0], "builder");
    assert_eq!(lines[1], "builder");
    assert!(rest.contains("127.0.0.1\tlocalhost builder"), "{rest}");
}

#[test]
fn the_etc_files_are_read_only() {
    let ctx = TestContext::new();
    let (result, out) = ctx.run(ctx.request("echo x > /etc/hosts"));
    assert!(result.is_err());
    assert!(out.stderr.contains("Read-only"), "{}", out.stderr);
    ctx.assert_no_leftovers();
}
