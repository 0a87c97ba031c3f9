#!/usr/bin/env python3
"""Writes the seed inputs of the apply, ignore and archive fuzz targets (run from fuzz/)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile


def tar(entries, fmt=tarfile.PAX_FORMAT):
    """entries: (name, type, data-or-linkname, pax headers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, payload, pax in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.mtime = 1700000000
            info.pax_headers = pax
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
                t.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
            else:
                t.addfile(info)
    return buf.getvalue()


def f(name, data=b"x", pax=None):
    return (name, tarfile.REGTYPE, data, pax or {})


def d(name, pax=None):
    return (name, tarfile.DIRTYPE, None, pax or {})


def sym(name, target):
    return (name, tarfile.SYMTYPE, target, {})


def hard(name, target):
    return (name, tarfile.LNKTYPE, target, {})


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as out:
        out.write(data)


FIX = b"\x04"  # apply: recompute header checksums after mutation
OVERLAY = b"\x05"  # ... and write whiteouts in overlay form

normal = tar([d("a/"), f("a/f", b"hello\n"), sym("a/l", "f"), hard("a/h", "a/f"),
              ("a/fifo", tarfile.FIFOTYPE, None, {})])
write("apply", "normal", FIX + normal)
write("apply", "gzip", b"\x00" + gzip.compress(normal, mtime=0))
if shutil.which("zstd"):
    zst = subprocess.run(["zstd", "-q", "-c"], input=normal, capture_output=True, check=True)
    write("apply", "zstd", b"\x02" + zst.stdout)
write("apply", "dotdot", FIX + tar([f("../escape"), f("a/../../escape")]))
write("apply", "absolute", FIX + tar([f("/escape")]))
write("apply", "symlink-then-write", FIX + tar([sym("x", "../outside"), f("x/evil")]))
write("apply", "write-through-existing-links",
      FIX + tar([f("out/evil"), f("abs/evil"), f("up/escape"), f("d/sentinel", b"overwritten")]))
write("apply", "hard-links-out",
      FIX + tar([hard("h1", "../outside/sentinel"), hard("h2", "abs/sentinel"),
                 hard("h3", "d/sentinel"), hard("h4", "/etc/passwd")]))
write("apply", "whiteouts",
      FIX + tar([f(".wh.lower", b""), f("d/.wh..wh..opq", b""), f(".wh...", b""),
                 f(".wh.", b""), f("up/.wh.outside", b""), f(".wh..wh.plnk", b"")]))
write("apply", "whiteouts-overlay",
      OVERLAY + tar([d("d/"), f("d/.wh..wh..opq", b""), f(".wh.lower", b""), f("new/.wh.gone", b"")]))
write("apply", "pax",
      FIX + tar([f("p", b"pax", {"path": "../pax-escape", "SCHILY.xattr.user.k": "v"}),
                 f("x" * 150 + "/long", b"long name"),
                 d("d2/", {"mtime": "-1.5", "SCHILY.xattr.trusted.overlay.opaque": "y"})]))
write("apply", "gnu-long-name", FIX + tar([f("g" * 120, b"gnu"), sym("l" * 120, "t" * 120)],
                                          fmt=tarfile.GNU_FORMAT))
write("apply", "replace-dir", FIX + tar([d("a/"), f("a/f"), f("a"), sym("d", "/")]))
write("apply", "devices", FIX + tar([("c", tarfile.CHRTYPE, None, {}), ("b", tarfile.BLKTYPE, None, {})]))
# A directory announcing more data than any archive holds, then another entry.
write("apply", "huge-size-dir", FIX + tar([d("big/", {"size": str(2**64 - 2)}), f("after")]))

write("ignore", "basic",
      b"# comment\nnode_modules\n*.md\n!README.md\n**/*.go\n/abs/\n\0"
      b"node_modules/x\nREADME.md\nCHANGES.md\na/b.go\nabs/x\n")
write("ignore", "classes", b"[a-c]?\n\\*x\ndist/**\n**\n!keep\n\0bx\n*x\ndist/a/b\nkeep\n")
write("ignore", "dots", b"../x\na/../b\n./c/\n!\n\0../x\nb\nc/d\n/\n..\n")


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def desc(media_type, data, **extra):
    return dict(mediaType=media_type, digest=sha(data), size=len(data), **extra)


layer = tar([d("bin/"), f("bin/hello", b"hello\n")], fmt=tarfile.USTAR_FORMAT)
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    "history": [{"created_by": "seed"}],
}).encode()
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": desc("application/vnd.oci.image.config.v1+json", config),
    "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
}).encode()
nested = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [desc("application/vnd.oci.image.manifest.v1+json", manifest,
                       platform={"architecture": "amd64", "os": "linux"})],
}).encode()
index = json.dumps({
    "schemaVersion": 2,
    "manifests": [desc("application/vnd.oci.image.manifest.v1+json", manifest,
                       annotations={"io.containerd.image.name": "docker.io/library/seed:1"}),
                  desc("application/vnd.oci.image.index.v1+json", nested,
                       annotations={"org.opencontainers.image.ref.name": "seed:2"})],
}).encode()
docker_manifest = json.dumps([{"Config": "1", "RepoTags": ["seed:1"], "Layers": ["2"]}]).encode()

SEP = b"\n--\n"
write("archive", "index", b"\x00" + index)
write("archive", "manifest", b"\x01" + manifest)
write("archive", "docker-manifest", b"\x02" + docker_manifest)
write("archive", "config", b"\x03" + config)
write("archive", "oci-archive", b"\x04" + SEP.join([index, manifest, nested, config, layer]))
write("archive", "docker-archive", b"\x05" + SEP.join([docker_manifest, config, layer]))
write("archive", "docker-archive-gzip-layer",
      b"\x05" + SEP.join([docker_manifest, config, gzip.compress(layer, mtime=0)]))
write("archive", "docker-archive-escaping",
      b"\x05" + json.dumps([{"Config": "../1", "RepoTags": None, "Layers": ["/2"]}]).encode())
