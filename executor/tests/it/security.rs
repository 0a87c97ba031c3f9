//! Capabilities and confinement.

use kiln_executor::SecurityMode;

use crate::support::TestContext;

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const DOCKER_CAPS: u64 = 0x0000_0000_a804_25fb;

fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_are_dockers_default_set() {
    let ctx = TestContext::new();
    let status = ctx.stdout_of(ctx.request("cat /proc/self/status"));
    assert_eq!(cap_field(&status, "CapEff:"), DOCKER_CAPS);
    assert_eq!(cap_field(&status, "CapBnd:"), DOCKER_CAPS);
    assert_eq!(cap_field(&status, "CapInh:"), 0);
}

#[test]
fn kernel_paths_are_masked_and_sys_is_read_only() {
    let ctx = TestContext::new();
    let out = ctx.stdout_of(ctx.request(
        "test -s /proc/kcore && echo kcore-visible; touch /sys/x 2>/dev/null && echo sys-writable; \
         grep -c . /proc/self/limits >/dev/null; grep 'Max open files' /proc/self/limits",
    ));
    assert!(!out.contains("kcore-visible"), "{out}");
    assert!(!out.contains("sys-writable"), "{out}");
    // Docker's 1048576, or as much of it as this process may grant.
    let fields: Vec<u64> = out
        .trim()
        .trim_start_matches("Max open files")
        .split_whitespace()
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    let own_hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX);
    assert_eq!(fields[0], fields[1], "{out}");
    assert!(
        fields[0] <= 1_048_576 && fields[0] >= own_hard.min(1_048_576),
        "{out}"
    );
}

#[test]
fn insecure_gets_every_capability() {
    let ctx = TestContext::new();
    let status = ctx.stdout_of(
        ctx.request("cat /proc/self/status")
            .with_security(SecurityMode::Insecure),
    );
    let eff = cap_field(&status, "CapEff:");
    assert_eq!(eff & DOCKER_CAPS, DOCKER_CAPS);
    assert_ne!(eff & (1 << 21), 0, "CAP_SYS_ADMIN missing: {eff:x}");
    let own = rustix::thread::capabilities(None).unwrap().permitted.bits();
    assert_eq!(
        eff, own,
        "an insecure step gets every capability kiln holds"
    );
}
