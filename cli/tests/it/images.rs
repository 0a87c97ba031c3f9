//! `import`, `images`, `inspect`, `history`, `tag`, `rmi`, `prune`, `du` and `load` of a
//! hostile archive, checked against the output Docker gives for the same commands.

use serde_json::Value;

use crate::support::{Kiln, busybox_rootfs};

fn is_short_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn columns(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn image_commands_behave_like_docker() {
    let kiln = Kiln::new();
    let rootfs = busybox_rootfs(kiln.dir.path());
    let rootfs = rootfs.to_str().unwrap();

    let id = kiln.ok(&["import", rootfs, "bb:1"]);
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    kiln.ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        "-m",
        "hello",
        rootfs,
        "bb:2",
    ]);

    // images: Docker's header, columns three spaces apart, newest first.
    let out = kiln.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "REPOSITORY   TAG       IMAGE ID       CREATED                  SIZE"
    );
    assert_eq!(lines.len(), 3, "{out}");
    let row = columns(lines[2]);
    assert_eq!(row[0], "bb");
    assert_eq!(row[1], "1");
    assert_eq!(row[2], &id[7..19]);
    assert!(row[3].ends_with(" ago"), "{out}");
    assert!(row[4].ends_with("MB") || row[4].ends_with("kB"), "{out}");

    let quiet = kiln.ok(&["images", "-q"]);
    assert_eq!(quiet.lines().count(), 2);
    assert!(quiet.lines().all(is_short_id), "{quiet}");

    let json = kiln.ok(&["images", "--format", "json"]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["Repository"], "bb");
    assert_eq!(rows[1]["Tag"], "1");
    assert_eq!(rows[1]["ID"], &id[7..19]);

    // inspect: manifest and config as stored.
    let inspect: Value = serde_json::from_str(&kiln.ok(&["inspect", "bb:1"])).unwrap();
    let image = &inspect[0];
    assert_eq!(image["Id"], id);
    assert_eq!(image["RepoTags"], serde_json::json!(["bb:1"]));
    assert_eq!(image["Manifest"]["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        image["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(image["Config"]["history"][0]["comment"], "Imported from -");
    assert_eq!(image["Config"]["os"], "linux");
    let inspect2: Value = serde_json::from_str(&kiln.ok(&["inspect", "bb:2"])).unwrap();
    assert_eq!(
        inspect2[0]["Config"]["config"]["Cmd"],
        serde_json::json!(["/bin/sh"])
    );

    // history: one entry, the image itself, Docker's columns.
    let out = kiln.ok(&["history", "bb:2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "IMAGE          CREATED                  CREATED BY   SIZE      COMMENT"
    );
    assert_eq!(lines.len(), 2, "{out}");
    let row = columns(lines[1]);
    assert!(is_short_id(row[0]), "{out}");
    assert_eq!(row.last(), Some(&"hello"));
    let quiet = kiln.ok(&["history", "-q", "--no-trunc", "bb:1"]);
    assert_eq!(quiet.trim(), id);
    let json: Value =
        serde_json::from_str(kiln.ok(&["history", "--format", "json", "bb:1"]).trim()).unwrap();
    assert_eq!(json["Comment"], "Imported from -");
    assert_eq!(json["CreatedBy"], "");

    // tag, then rmi by name untags only; by ID with two names needs -f.
    kiln.ok(&["tag", "bb:1", "other/name:v2"]);
    assert!(kiln.ok(&["images"]).contains("other/name   v2"));
    assert!(kiln.fails(&["rmi", &id[7..19]]).contains("must be forced"));
    assert_eq!(
        kiln.ok(&["rmi", "other/name:v2"]),
        "Untagged: other/name:v2\n"
    );
    assert_eq!(
        kiln.ok(&["rmi", "bb:1"]),
        format!("Untagged: bb:1\nDeleted: {id}\n")
    );
    assert!(kiln.fails(&["rmi", "bb:1"]).contains("no such image: bb:1"));
    assert!(
        kiln.fails(&["history", "nothing"])
            .contains("no such image: nothing")
    );

    // du counts blobs; prune frees those of the removed image and keeps bb:2's.
    let du = kiln.ok(&["du", "--format", "json"]);
    let before: Value = serde_json::from_str(du.trim()).unwrap();
    assert!(before["Reclaimable"].as_u64().unwrap() > 0, "{du}");
    let table = kiln.ok(&["du"]);
    assert!(
        table.starts_with("TYPE        COUNT     SIZE\nBlobs "),
        "{table}"
    );
    let pruned = kiln.ok(&["prune"]);
    assert!(pruned.starts_with("Total reclaimed space: "), "{pruned}");
    assert!(!pruned.contains("space: 0B"), "{pruned}");
    let after: Value = serde_json::from_str(kiln.ok(&["du", "--format", "json"]).trim()).unwrap();
    assert_eq!(after["Reclaimable"], 0);
    assert_eq!(
        after["Blobs"]["Count"], 3,
        "bb:2's manifest, config and layer remain"
    );
    kiln.ok(&["history", "bb:2"]);
}

#[test]
fn retagging_leaves_an_untagged_image_that_prune_removes() {
    let kiln = Kiln::new();
    let rootfs = busybox_rootfs(kiln.dir.path());
    let rootfs = rootfs.to_str().unwrap();
    let first = kiln.ok(&["import", rootfs, "app"]);
    kiln.ok(&["import", "-m", "second", rootfs, "app"]);
    let out = kiln.ok(&["images"]);
    assert!(out.contains("<none>       <none>"), "{out}");
    let pruned = kiln.ok(&["prune"]);
    assert!(
        pruned.starts_with(&format!("Deleted: {}", first.trim())),
        "{pruned}"
    );
    assert_eq!(kiln.ok(&["images", "-q"]).lines().count(), 1);
}

#[test]
fn a_hostile_archive_is_refused_and_tags_nothing() {
    let kiln = Kiln::new();
    let path = kiln.dir.path().join("evil.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let manifest = br#"[{"Config":"c.json","RepoTags":["evil:1"],"Layers":["../../etc/passwd"]}]"#;
    let mut header = tar::Header::new_ustar();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut header = tar::Header::new_ustar();
    header.set_size(config.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "c.json", &config[..]).unwrap();
    tar.finish().unwrap();
    drop(tar);

    let err = kiln.fails(&["load", "-i", path.to_str().unwrap()]);
    assert!(err.contains("evil.tar"), "{err}");
    assert!(err.contains("layers listed"), "{err}");
    assert_eq!(kiln.ok(&["images", "-q"]), "");
}
