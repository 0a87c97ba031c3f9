"""Turns the raw measurements of bench/run (a TSV) into the Markdown tables of the report.

Usage: python3 bench/report.py RAW.tsv [DD_SECONDS ZSTD_SECONDS SHA256_SECONDS]
(the last three: the reference timings of the big layer's 1 GiB, empty when not run).
"""

import csv
import statistics
import sys
from collections import defaultdict

TOOLS = ["kiln", "buildkit", "buildah"]
NAMES = {"kiln": "kiln", "buildkit": "BuildKit", "buildah": "Buildah"}
ORDER = ["cold", "noop", "onechange", "multistage", "biglayer", "apt",
         "cicache-export", "cicache-import", "cicache", "cicache-job"]
LABELS = {
    "cold": "cold (6 steps, all caches empty)",
    "noop": "no-op rebuild (20k files, 200 MB)",
    "onechange": "one file changed",
    "multistage": "multi-stage (4 × sleep 2)",
    "biglayer": "big layer (1 GiB RUN)",
    "apt": "apt-get install jq",
    "cicache-export": "CI cache: build + push cache",
    "cicache-import": "CI cache: fresh store, --cache-from",
    "cicache": "CI cache: export + import",
    "cicache-job": "CI cache round trip: fresh store, import + build + export + push",
}
# The targets: the largest acceptable kiln/BuildKit ratio of medians.
TARGETS = {"noop": 0.25, "onechange": 0.5, "cold": 0.7, "multistage": 0.8,
           "biglayer": 0.6, "apt": 0.9, "cicache-job": 0.5}
RSS_TARGET_MIB = 100
GIB = 1 << 30


def load(path):
    rows = defaultdict(list)  # (scenario, tool) -> rows
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            rows[(r["scenario"], r["tool"])].append(r)
    # The round trip: export + import of the same run.
    for tool in TOOLS:
        exp = {r["run"]: r for r in rows.get(("cicache-export", tool), [])}
        imp = {r["run"]: r for r in rows.get(("cicache-import", tool), [])}
        for run in sorted(set(exp) & set(imp), key=int):
            a, b = exp[run], imp[run]
            rows[("cicache", tool)].append({
                "seconds": str(float(a["seconds"]) + float(b["seconds"])),
                "peak_kib": str(max(int(a["peak_kib"]), int(b["peak_kib"]))),
                "self_kib": str(max(int(a["self_kib"]), int(b["self_kib"]))),
                "load1": b["load1"],
                "status": "ok" if a["status"] == b["status"] == "ok" else "FAIL",
            })
    return rows


def stats(rows):
    ok = [float(r["seconds"]) for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    return {
        "median": statistics.median(ok),
        "min": min(ok),
        "max": max(ok),
        "n": len(ok),
        "runs": len(rows),
        "peak": max(int(r["peak_kib"]) for r in rows if r["status"] == "ok") / 1024,
        "self": max(int(r["self_kib"] or 0) for r in rows if r["status"] == "ok") / 1024,
    }


def cell(s):
    if s is None:
        return "FAIL"
    text = f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"
    if s["n"] < s["runs"]:
        text += f" [{s['runs'] - s['n']} of {s['runs']} failed]"
    return text


def ratio(a, b):
    if a is None or b is None:
        return None
    return a["median"] / b["median"]


def main():
    rows = load(sys.argv[1])
    refs = sys.argv[2:5] if len(sys.argv) >= 5 else []
    tools = [t for t in TOOLS if any(k[1] == t for k in rows)]
    scenarios = [s for s in ORDER if any(k[0] == s for k in rows)]

    head = ["scenario"] + [f"{NAMES[t]} s, median (min–max)" for t in tools]
    if "buildkit" in tools:
        head += ["kiln/BuildKit", "target", "met"]
    if "buildah" in tools:
        head += ["kiln/Buildah"]
    head += [f"peak RSS MiB {NAMES[t]}" for t in tools] + ["load (median)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for scen in scenarios:
        st = {t: stats(rows.get((scen, t), [])) for t in tools}
        line = [LABELS.get(scen, scen)] + [cell(st[t]) for t in tools]
        if "buildkit" in tools:
            r = ratio(st.get("kiln"), st["buildkit"])
            target = TARGETS.get(scen)
            line += [f"{r:.2f}" if r is not None else "–",
                     f"≤ {target}" if target else "",
                     ("yes" if r <= target else "**no**") if (r is not None and target) else ""]
        if "buildah" in tools:
            r = ratio(st.get("kiln"), st["buildah"])
            line += [f"{r:.2f}" if r is not None else "–"]
        for t in tools:
            s = st[t]
            if s is None:
                line.append("–")
            elif t == "kiln":
                mark = "" if s["peak"] <= RSS_TARGET_MIB else " **>100**"
                line.append(f"{s['peak']:.0f} (kiln alone {s['self']:.0f}){mark}")
            else:
                line.append(f"{s['peak']:.0f}")
        loads = [float(r["load1"]) for t in tools for r in rows.get((scen, t), [])]
        line.append(f"{statistics.median(loads):.1f}" if loads else "")
        print("| " + " | ".join(line) + " |")

    print()
    print("Peak RSS: kiln and Buildah from `/usr/bin/time -f %M`, the largest resident set of the "
          "process and of the children it waited for (runc and the RUN commands included); "
          "\"kiln alone\" is the kiln process's own VmHWM, sampled every 0.1 s; BuildKit: VmHWM "
          "of dockerd, reset before each build. The largest value over the runs.")

    if refs and all(refs) and any(k[0] == "biglayer" for k in rows):
        dd, zst, sha = (float(x) for x in refs)
        print()
        print("Big layer throughput (1 GiB / median wall time of the whole build), beside the "
              "same 1 GiB on the host:")
        print()
        print("| | seconds | MB/s |")
        print("|---|---|---|")
        for t in tools:
            s = stats(rows.get(("biglayer", t), []))
            if s:
                print(f"| {NAMES[t]} build | {s['median']:.2f} | {GIB / s['median'] / 1e6:.0f} |")
        for name, secs in [("`dd if=/dev/urandom bs=1M count=1024` (the RUN alone)", dd),
                           ("`tar -cf - | zstd -T0` of the file", zst),
                           ("`sha256sum` of the file", sha)]:
            print(f"| {name} | {secs:.2f} | {GIB / secs / 1e6:.0f} |")


if __name__ == "__main__":
    main()
