//! Archives proven with the tools that read them: `docker load` and `docker run` of a
//! `kiln save`, `kiln load` of a `docker save` (Docker 20.10's legacy layout), and
//! `skopeo` and `umoci` on `kiln save --format oci`.

use std::path::Path;
use std::process::Command;

use crate::support::{Dockerd, Kiln, busybox_rootfs, require};

#[test]
fn docker_runs_what_kiln_saves_and_kiln_loads_what_docker_saves() {
    let kiln = Kiln::new();
    let dir = kiln.dir.path();
    let rootfs = busybox_rootfs(dir);
    kiln.ok(&["import", rootfs.to_str().unwrap(), "kiln-bb:1"]);
    let archive = dir.join("bb.tar");
    kiln.ok(&["save", "-o", archive.to_str().unwrap(), "kiln-bb:1"]);

    let docker = Dockerd::start();
    let loaded = docker.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: kiln-bb:1"), "{loaded}");
    let said = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "kiln-bb:1",
        "/bin/sh",
        "-c",
        "echo made by kiln",
    ]);
    assert_eq!(said, "made by kiln\n");

    // The other way: a multi-layer image Docker built, saved in its own format.
    let context = dir.join("ctx");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM kiln-bb:1\nRUN echo hi > /hello.txt\nENV A=b\nCMD [\"/bin/cat\", \"/hello.txt\"]\n",
    )
    .unwrap();
    docker.ok(&[
        "build",
        "-q",
        "-t",
        "from-docker:2",
        context.to_str().unwrap(),
    ]);
    let docker_id = docker.ok(&["image", "inspect", "--format", "{{.Id}}", "from-docker:2"]);
    let saved = dir.join("from-docker.tar");
    docker.ok(&["save", "-o", saved.to_str().unwrap(), "from-docker:2"]);
    drop(docker);

    let fresh = Kiln::new();
    let out = fresh.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: from-docker:2\n");
    let images = fresh.ok(&["images"]);
    let row = images.lines().nth(1).expect("one image");
    assert!(row.starts_with("from-docker   2         "), "{images}");
    assert!(
        row.contains(&docker_id.trim()[7..19]),
        "{images} vs {docker_id}"
    );

    let history = fresh.ok(&["history", "from-docker:2"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 5, "{history}");
    assert!(lines[1].starts_with(&docker_id.trim()[7..19]), "{history}");
    assert!(
        lines[1].contains("CMD [\"/bin/cat\" \"/hello.t…   0B"),
        "{history}"
    );
    let full = fresh.ok(&["history", "--no-trunc", "from-docker:2"]);
    assert!(full.contains("CMD [\"/bin/cat\" \"/hello.txt\"]"), "{full}");
    assert!(
        lines[2].starts_with("<missing>") && lines[2].contains("ENV A=b"),
        "{history}"
    );
    assert!(lines[2].contains(" 0B "), "{history}");
    assert!(lines[4].ends_with("Imported from -"), "{history}");

    // And back out again: Docker's image survives a kiln round trip unchanged.
    let again = dir.join("again.tar");
    fresh.ok(&["save", "-o", again.to_str().unwrap(), "from-docker:2"]);
    let third = Kiln::new();
    third.ok(&["load", "-i", again.to_str().unwrap()]);
    assert_eq!(third.ok(&["images", "-q"]), fresh.ok(&["images", "-q"]));
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn skopeo_and_umoci_read_kilns_oci_archives() {
    require("skopeo", "skopeo");
    require("umoci", "umoci");
    let kiln = Kiln::new();
    let dir = kiln.dir.path();
    let rootfs = busybox_rootfs(dir);
    kiln.ok(&["import", rootfs.to_str().unwrap(), "busybox:oci"]);
    let archive = dir.join("bb-oci.tar");
    kiln.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "busybox:oci",
    ]);

    let spec = format!("oci-archive:{}", archive.display());
    let inspect: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &spec]))).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1, "{inspect}");
    assert_eq!(inspect["Os"], "linux");
    let copied = dir.join("copied");
    run(Command::new("skopeo").args(["copy", &spec, &format!("dir:{}", copied.display())]));
    assert!(copied.join("manifest.json").is_file());

    let layout = dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:oci", layout.display()))
        .arg(&bundle));
    let busybox = bundle.join("rootfs/bin/busybox");
    assert_eq!(
        std::fs::metadata(&busybox).unwrap().len(),
        std::fs::metadata("/bin/busybox").unwrap().len()
    );
    let sh = std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap();
    assert_eq!(sh, Path::new("busybox"));
}
