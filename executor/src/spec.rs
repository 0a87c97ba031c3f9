//! The OCI runtime spec (`config.json`) for one step, built with `oci-spec`.
//!
//! It is a pure function of the request and a few bundle paths, so everything a
//! container is promised (Docker's capability set, masked paths, namespaces per network
//! mode, read-only `/etc` files, rlimits) is checked by unit tests without running one.
//! The defaults are Docker's, which is what `docker build` users expect a `RUN` to get.

use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount as OciMount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use crate::request::{ExecRequest, MountKind, NetworkMode, SecurityMode};

/// The hostname a step gets unless the request names one.
pub const DEFAULT_HOSTNAME: &str = "kilnsandbox";

/// `PATH` for a step whose environment has none, as Docker sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set, given to every step unless it is insecure.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability Linux defines (up to `CAP_CHECKPOINT_RESTORE`, Linux 5.9), for
/// insecure steps; index `i` is capability number `i`.
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Docker's masked paths: host information a container should not read.
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths: kernel knobs a container should not turn.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Open files limit, soft and hard, as Docker's daemon sets it.
const NOFILE_LIMIT: u64 = 1_048_576;

/// The open files limit a step gets: Docker's, lowered to what this process may grant.
/// Raising a hard limit needs `CAP_SYS_RESOURCE` (and stays under `fs.nr_open`); a
/// process without it (kiln inside a confined container) can pass on its own limit.
pub(crate) fn nofile_limit() -> u64 {
    let can_raise = rustix::thread::capabilities(None).is_ok_and(|caps| {
        caps.effective
            .contains(rustix::thread::CapabilitySet::SYS_RESOURCE)
    });
    let ceiling = if can_raise {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    } else {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum
    };
    ceiling.map_or(NOFILE_LIMIT, |c| c.min(NOFILE_LIMIT))
}

/// What the spec refers to outside the request: bundle files and host limits.
#[derive(Debug, Clone)]
pub(crate) struct SpecInputs {
    /// The rootfs as the runtime sees it (the overlay mount point or the plain dir).
    pub root: PathBuf,
    /// The generated `/etc/hosts`.
    pub hosts: PathBuf,
    /// The generated `/etc/hostname`.
    pub hostname: PathBuf,
    /// The generated `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// `RLIMIT_NOFILE`, soft and hard.
    pub nofile: u64,
    /// Bit mask of the capabilities this process holds and so can pass on; a step
    /// never gets one outside it (runc would refuse to start).
    pub grantable_caps: u64,
}

/// The capabilities this process may pass on to a container: its permitted set.
pub(crate) fn grantable_capabilities() -> u64 {
    rustix::thread::capabilities(None).map_or(u64::MAX, |caps| caps.permitted.bits())
}

/// The runtime spec for `req`.
pub(crate) fn runtime_spec(req: &ExecRequest, inputs: &SpecInputs) -> Result<Spec, OciSpecError> {
    let insecure = req.security == SecurityMode::Insecure;
    let caps: Capabilities = ALL_CAPABILITIES
        .into_iter()
        .enumerate()
        .filter(|(bit, cap)| {
            inputs.grantable_caps & (1 << bit) != 0
                && (insecure || DEFAULT_CAPABILITIES.contains(cap))
        })
        .map(|(_, cap)| cap)
        .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;
    let user = UserBuilder::default()
        .uid(req.user.uid)
        .gid(req.user.gid)
        .additional_gids(req.user.additional_gids.clone())
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(req.args.clone())
        .env(environment(&req.env))
        .cwd(req.cwd.clone())
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(inputs.nofile)
                .hard(inputs.nofile)
                .build()?,
        ])
        .no_new_privileges(false)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if req.network == NetworkMode::None {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    let devices = LinuxDeviceCgroupBuilder::default()
        .allow(insecure)
        .access("rwm")
        .build()?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces).resources(
        LinuxResourcesBuilder::default()
            .devices(vec![devices])
            .build()?,
    );
    // Builders start from oci-spec's defaults, which mask paths of their own.
    let (masked, readonly) = if insecure {
        (Vec::new(), Vec::new())
    } else {
        (
            MASKED_PATHS.map(String::from).to_vec(),
            READONLY_PATHS.map(String::from).to_vec(),
        )
    };
    linux = linux.masked_paths(masked).readonly_paths(readonly);

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(inputs.root.clone())
                .readonly(false)
                .build()?,
        )
        .hostname(req.hostname.clone())
        .process(process)
        .mounts(mounts(req, inputs, insecure)?)
        .linux(linux.build()?)
        .build()
}

/// The environment in `KEY=value` form, with Docker's default `PATH` when none is set.
fn environment(env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    out
}

fn mounts(
    req: &ExecRequest,
    inputs: &SpecInputs,
    insecure: bool,
) -> Result<Vec<OciMount>, OciSpecError> {
    let ro_unless_insecure = |options: &[&'static str]| -> Vec<&'static str> {
        let mut options = options.to_vec();
        if !insecure {
            options.push("ro");
        }
        options
    };
    let mut out = vec![
        kernel_mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        kernel_mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        kernel_mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        kernel_mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        kernel_mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        kernel_mount(
            "/sys",
            "sysfs",
            "sysfs",
            &ro_unless_insecure(&["nosuid", "noexec", "nodev"]),
        )?,
        kernel_mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &ro_unless_insecure(&["nosuid", "noexec", "nodev", "relatime"]),
        )?,
        bind_mount("/etc/hosts", &inputs.hosts, true)?,
        bind_mount("/etc/hostname", &inputs.hostname, true)?,
        bind_mount("/etc/resolv.conf", &inputs.resolv_conf, true)?,
    ];
    for mount in &req.mounts {
        out.push(match &mount.kind {
            MountKind::Bind { source, readonly } => {
                bind_mount(&mount.destination, source, *readonly)?
            }
            MountKind::Tmpfs { size } => {
                let mut options = vec![
                    "nosuid".to_owned(),
                    "nodev".to_owned(),
                    "mode=1777".to_owned(),
                ];
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                MountBuilder::default()
                    .destination(mount.destination.clone())
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()?
            }
        });
    }
    Ok(out)
}

fn kernel_mount(
    dest: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<OciMount, OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
}

fn bind_mount(
    dest: impl AsRef<Path>,
    source: &Path,
    readonly: bool,
) -> Result<OciMount, OciSpecError> {
    let options = ["rbind", "rprivate", if readonly { "ro" } else { "rw" }];
    MountBuilder::default()
        .destination(dest.as_ref())
        .typ("bind")
        .source(source)
        .options(options.map(String::from).to_vec())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Mount, Rootfs, User};
    use std::collections::HashSet;

    fn inputs() -> SpecInputs {
        SpecInputs {
            root: "/b/rootfs".into(),
            hosts: "/b/hosts".into(),
            hostname: "/b/hostname".into(),
            resolv_conf: "/b/resolv.conf".into(),
            nofile: NOFILE_LIMIT,
            grantable_caps: u64::MAX,
        }
    }

    fn request() -> ExecRequest {
        ExecRequest::new(
            vec!["/bin/sh".into(), "-c".into(), "true".into()],
            Rootfs::Dir("/r".into()),
        )
    }

    fn namespaces(spec: &Spec) -> HashSet<LinuxNamespaceType> {
        let linux = spec.linux().as_ref().unwrap();
        linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|ns| ns.typ())
            .collect()
    }

    fn mount<'a>(spec: &'a Spec, dest: &str) -> &'a OciMount {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn options(m: &OciMount) -> Vec<&str> {
        m.options()
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn process_carries_user_env_cwd_and_dockers_capabilities() {
        let req = request()
            .with_env(vec![("A".into(), "1".into())])
            .with_cwd("/src")
            .with_user(User {
                uid: 1000,
                gid: 100,
                additional_gids: vec![5, 7],
            });
        let spec = runtime_spec(&req, &inputs()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &req.args);
        assert_eq!(
            process.env().as_ref().unwrap(),
            &vec![format!("PATH={DEFAULT_PATH}"), "A=1".to_owned()]
        );
        assert_eq!(process.cwd(), Path::new("/src"));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 100);
        assert_eq!(
            process.user().additional_gids().as_ref().unwrap(),
            &vec![5, 7]
        );
        assert_eq!(process.terminal(), Some(false));
        let caps = process.capabilities().as_ref().unwrap();
        let want: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        assert_eq!(caps.bounding().as_ref(), Some(&want));
        assert_eq!(caps.effective().as_ref(), Some(&want));
        assert_eq!(caps.permitted().as_ref(), Some(&want));
        assert_eq!(caps.inheritable(), &Some(Capabilities::new()));
        assert_eq!(caps.ambient(), &Some(Capabilities::new()));
        let rlimit = &process.rlimits().as_ref().unwrap()[0];
        assert_eq!(rlimit.typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rlimit.soft(), rlimit.hard()), (NOFILE_LIMIT, NOFILE_LIMIT));
    }

    #[test]
    fn the_nofile_limit_is_dockers_at_most() {
        let limit = nofile_limit();
        assert!(limit > 0 && limit <= NOFILE_LIMIT);
    }

    #[test]
    fn capabilities_this_process_lacks_are_not_granted() {
        let sys_admin = 1 << 21;
        let setuid = 1 << 7;
        let limited = SpecInputs {
            grantable_caps: sys_admin | setuid,
            ..inputs()
        };
        for security in [SecurityMode::Sandbox, SecurityMode::Insecure] {
            let spec = runtime_spec(&request().with_security(security), &limited).unwrap();
            let caps = spec
                .process()
                .as_ref()
                .unwrap()
                .capabilities()
                .as_ref()
                .unwrap();
            let mut want: Capabilities = [Capability::Setuid].into();
            if security == SecurityMode::Insecure {
                want.insert(Capability::SysAdmin);
            }
            assert_eq!(caps.effective().as_ref(), Some(&want), "{security:?}");
        }
    }

    #[test]
    fn a_path_in_the_request_is_kept() {
        let req = request().with_env(vec![("PATH".into(), "/opt/bin".into())]);
        let spec = runtime_spec(&req, &inputs()).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, vec!["PATH=/opt/bin".to_owned()]);
    }

    #[test]
    fn network_modes_choose_namespaces() {
        let base: HashSet<_> = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
        ]
        .into();
        for mode in [NetworkMode::Sandbox, NetworkMode::Host] {
            let spec = runtime_spec(&request().with_network(mode), &inputs()).unwrap();
            assert_eq!(namespaces(&spec), base, "{mode:?}");
        }
        let spec = runtime_spec(&request().with_network(NetworkMode::None), &inputs()).unwrap();
        let mut with_net = base.clone();
        with_net.insert(LinuxNamespaceType::Network);
        assert_eq!(namespaces(&spec), with_net);
    }

    #[test]
    fn etc_files_are_read_only_binds_from_the_bundle() {
        let spec = runtime_spec(&request(), &inputs()).unwrap();
        for (dest, src) in [
            ("/etc/hosts", "/b/hosts"),
            ("/etc/hostname", "/b/hostname"),
            ("/etc/resolv.conf", "/b/resolv.conf"),
        ] {
            let m = mount(&spec, dest);
            assert_eq!(m.source().as_deref(), Some(Path::new(src)));
            assert_eq!(m.typ().as_deref(), Some("bind"));
            assert!(options(m).contains(&"ro"), "{dest}");
        }
        assert_eq!(spec.hostname().as_deref(), Some(DEFAULT_HOSTNAME));
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("/b/rootfs"));
    }

    #[test]
    fn standard_mounts_come_first_and_sys_is_read_only() {
        let spec = runtime_spec(&request(), &inputs()).unwrap();
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            dests[..7],
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
        assert!(options(mount(&spec, "/sys")).contains(&"ro"));
        assert!(options(mount(&spec, "/sys/fs/cgroup")).contains(&"ro"));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert_eq!(
            linux.readonly_paths().as_ref().unwrap().len(),
            READONLY_PATHS.len()
        );
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!devices[0].allow());
    }

    #[test]
    fn insecure_lifts_the_confinement() {
        let spec =
            runtime_spec(&request().with_security(SecurityMode::Insecure), &inputs()).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.effective().as_ref().unwrap().len(),
            ALL_CAPABILITIES.len()
        );
        assert!(!options(mount(&spec, "/sys")).contains(&"ro"));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.masked_paths(), &Some(vec![]));
        assert_eq!(linux.readonly_paths(), &Some(vec![]));
        let devices = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(devices[0].allow());
    }

    #[test]
    fn extra_mounts_follow_in_order() {
        let req = request()
            .with_mount(Mount {
                destination: "/src".into(),
                kind: MountKind::Bind {
                    source: "/ctx".into(),
                    readonly: true,
                },
            })
            .with_mount(Mount {
                destination: "/root/.cache".into(),
                kind: MountKind::Bind {
                    source: "/cache/1".into(),
                    readonly: false,
                },
            })
            .with_mount(Mount {
                destination: "/tmp".into(),
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            });
        let spec = runtime_spec(&req, &inputs()).unwrap();
        let all = spec.mounts().as_ref().unwrap();
        let tail: Vec<_> = all[all.len() - 3..].iter().collect();
        assert_eq!(tail[0].destination(), Path::new("/src"));
        assert_eq!(options(tail[0]), ["rbind", "rprivate", "ro"]);
        assert_eq!(options(tail[1]), ["rbind", "rprivate", "rw"]);
        assert_eq!(tail[2].typ().as_deref(), Some("tmpfs"));
        assert!(options(tail[2]).contains(&"size=1048576"));
    }

    #[test]
    fn config_json_round_trips() {
        let spec = runtime_spec(&request(), &inputs()).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"CAP_NET_BIND_SERVICE\""));
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
