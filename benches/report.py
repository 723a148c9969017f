"""Render one benchmark run (the dict built by run.py) as JSON, Markdown and PNG plots.

Files written to the output directory, named ``<arch>-<timestamp>``:
``.json`` (the data), ``.md`` (the tables; also copied to ``latest.md``) and
``-latency.png`` / ``-burst.png`` (matplotlib, Agg backend; skipped with a note when
matplotlib is not installed). This module only formats: it measures nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

ORDER = ["cold", "restored-l1", "restored-l2", "warm", "warm-serve",
         "rie-cold", "rie-warm", "zygote", "process"]


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown(data: dict[str, Any], plots: list[str]) -> str:
    m = data["meta"]
    lines = [f"# snapstart benchmarks — {m['arch_label']}", "",
             f"{m['date']} · {m['cpu_model']} · {m['cores']} cores · kernel {m['kernel']} · "
             f"CRIU {m['criu_version']} · Python {m['python_version']} · "
             f"emulated: {str(m['emulated']).lower()} · N={m['n']} · load avg (1/5/15 min) "
             f"{m.get('loadavg_start', '-')} at start, {m.get('loadavg_end', '-')} at end", "",
             "Request sent -> response received, measured in the benchmark process "
             "(milliseconds; one discarded warm-up per series).", "",
             "| function | start type | via | n | min | p50 | p90 | p99 | errors |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(data["results"], key=lambda r: (r["function"], ORDER.index(r["start_type"])
                                                   if r["start_type"] in ORDER else 99))
    for r in rows:
        lines.append(f"| {r['function']} | {r['start_type']} | {r['via']} | {r['n']} | "
                     f"{_fmt(r['min'])} | {_fmt(r['p50'])} | {_fmt(r['p90'])} | "
                     f"{_fmt(r['p99'])} | {r['errors']} |")
    lines += ["", "## Ratios (of p50)", "",
              "| function | cold/restored-l1 | restored-l1/warm | restored-l1/zygote | "
              "restored-l2/restored-l1 | rie-cold/restored-l1 |",
              "|---|---:|---:|---:|---:|---:|"]
    for fn, r in data["ratios"].items():
        lines.append(f"| {fn} | {_fmt(r['cold/restored-l1'])} | {_fmt(r['restored-l1/warm'])} | "
                     f"{_fmt(r['restored-l1/zygote'])} | {_fmt(r['restored-l2/restored-l1'])} | "
                     f"{_fmt(r['rie-cold/restored-l1'])} |")
    if data["burst"]:
        lines += ["", "## Burst: simultaneous first invokes of a freshly published version",
                  "", "Completion: wall clock of Manager.invoke_clones(name, n). p50/p99: "
                  "per clone, materialize + restore + first invoke as the manager reports "
                  "it.", "",
                  "| function | n | completion ms | p50 | p99 | ok | errors | restores/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for b in data["burst"]:
            lines.append(f"| {b['function']} | {b['n']} | {_fmt(b['completion_ms'], 1)} | "
                         f"{_fmt(b['p50'])} | {_fmt(b['p99'])} | {b['ok']} | {b['errors']} | "
                         f"{_fmt(b['restores_per_s'], 1)} |")
        lines += ["", f"Restores per second sustained (best burst): "
                      f"{_fmt(data.get('restores_per_s_max'), 1)}"]
    if data["memory"]:
        lines += ["", "## Memory per idle clone (smaps_rollup, agent + runtime)", "",
                  "| function | clone | clones | RSS MiB | PSS MiB |", "|---|---|---:|---:|---:|"]
        for mrow in data["memory"]:
            lines.append(f"| {mrow['function']} | {mrow['kind']} | {mrow['clones']} | "
                         f"{mrow['rss_kib'] / 1024:.1f} | {mrow['pss_kib'] / 1024:.1f} |")
    if data["publish"]:
        lines += ["", "## Publish", "", "| function | init ms | dump ms | image MiB | "
                  "stored MiB | publish wall ms (incl. pip) |", "|---|---:|---:|---:|---:|---:|"]
        for fn, p in data["publish"].items():
            lines.append(f"| {fn} | {_fmt(p['init_duration_ms'], 1)} | "
                         f"{_fmt(p['dump_duration_ms'], 1)} | {p['image_bytes'] / 2**20:.1f} | "
                         f"{p['stored_bytes'] / 2**20:.1f} | {_fmt(p['wall_ms'], 0)} |")
    problems = [(r["function"], r["start_type"], r["error_examples"], r["notes"])
                for r in data["results"] if r["errors"] or (r["notes"] and not r["n"])]
    if data["unavailable"] or problems:
        lines += ["", "## Not measured / problems", ""]
        for k, v in data["unavailable"].items():
            lines.append(f"- {k}: {v}")
        for fn, st, errs, notes in problems:
            lines.append(f"- {fn} {st}: {'; '.join(errs + notes)}")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(data: dict[str, Any], stem: Path) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out: list[str] = []
    fns = sorted({r["function"] for r in data["results"]})
    types = [t for t in ORDER if any(r["start_type"] == t and r["p50"] for r in data["results"])]
    if fns and types:
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / max(1, len(types))
        for i, st in enumerate(types):
            xs, p50, lo, hi = [], [], [], []
            for j, fn in enumerate(fns):
                r = next((r for r in data["results"] if r["function"] == fn
                          and r["start_type"] == st and r["p50"]), None)
                if r:
                    xs.append(j + i * width)
                    p50.append(r["p50"])
                    lo.append(r["p50"] - r["min"])
                    hi.append(r["p99"] - r["p50"])
            ax.bar(xs, p50, width, yerr=[lo, hi], capsize=2, label=st)
        ax.set_xticks([j + width * (len(types) - 1) / 2 for j in range(len(fns))], fns)
        ax.set_yscale("log")
        ax.set_ylabel("ms, request sent -> response (bar p50, whiskers min..p99)")
        ax.set_title(f"Start latency by start type — {data['meta']['arch_label']}")
        ax.legend(fontsize=8, ncol=3)
        fig.tight_layout()
        path = f"{stem}-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    if data["burst"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for fn in sorted({b["function"] for b in data["burst"]}):
            rows = [b for b in data["burst"] if b["function"] == fn]
            ax.plot([b["n"] for b in rows], [b["completion_ms"] for b in rows], "o-",
                    label=f"{fn}: completion")
            ax.plot([b["n"] for b in rows], [b["p50"] or 0 for b in rows], "x--",
                    label=f"{fn}: per-clone p50")
        ax.set_xlabel("simultaneous first invokes (fresh clones)")
        ax.set_ylabel("ms")
        ax.set_title("Burst of restored starts")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = f"{stem}-burst.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def write_reports(data: dict[str, Any], out_dir: Path, *, plots: bool = True) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    arch = data["meta"]["arch"] + ("-emulated" if data["meta"]["emulated"] else "")
    stem = out_dir / f"{arch}-{stamp}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    pngs = _plots(data, stem) if plots else []
    text = markdown(data, pngs)
    md_path = stem.with_suffix(".md")
    md_path.write_text(text)
    shutil.copyfile(md_path, out_dir / "latest.md")
    return {"json": json_path, "markdown": md_path, "latest": out_dir / "latest.md",
            "plots": pngs, "markdown_text": text}
