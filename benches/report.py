"""Render one benchmark run (the dict built by run.py) as JSON, Markdown and PNG plots.

Files written to the output directory, named ``<arch>-<timestamp>``:
``.json`` (the data), ``.md`` (the tables; also copied to ``latest.md``, or
``latest-<arch>-emulated.md`` for an emulated run) and
``-latency.png`` / ``-burst.png`` (matplotlib, Agg backend; skipped with a note when
matplotlib is not installed). This module only formats: it measures nothing.

It also compares architectures: ``compare`` takes the newest result of each arch
in a results directory (x86_64 and the emulated aarch64 one from
``make bench-arm64``) and writes ``compare-latest.md`` (one table of the p50 ratios
of ``COMPARED`` and the PSS burst/lone ratio per function, side by side)
and ``compare-latest.png``. Only ratios are compared: absolute times under QEMU TCG
mean nothing.

    python benches/report.py render RESULT.json [--out DIR]   # .md + plots for a JSON
    python benches/report.py compare [--results DIR]          # print + write the comparison
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ORDER = ["cold", "restored-l1", "restored-l2", "restored-pool", "cli-restored", "warm",
         "warm-serve", "rie-cold", "rie-warm", "zygote", "process"]


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
              "restored-l2/restored-l1 | rie-cold/restored-l1 | restored-pool/zygote | "
              "cli-restored/restored-l1 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for fn, r in data["ratios"].items():
        lines.append(f"| {fn} | {_fmt(r.get('cold/restored-l1'))} | "
                     f"{_fmt(r.get('restored-l1/warm'))} | {_fmt(r.get('restored-l1/zygote'))} | "
                     f"{_fmt(r.get('restored-l2/restored-l1'))} | "
                     f"{_fmt(r.get('rie-cold/restored-l1'))} | "
                     f"{_fmt(r.get('restored-pool/zygote'))} | "
                     f"{_fmt(r.get('cli-restored/restored-l1'))} |")
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
        lines += ["", "## Memory per idle clone (smaps_rollup of its processes)", "",
                  "| function | clone | clones | RSS MiB | PSS MiB |", "|---|---|---:|---:|---:|"]
        for mrow in data["memory"]:
            lines.append(f"| {mrow['function']} | {mrow['kind']} | {mrow['clones']} | "
                         f"{mrow['rss_kib'] / 1024:.1f} | {mrow['pss_kib'] / 1024:.1f} |")
        if data.get("pss_burst_over_lone"):
            lines += ["", "PSS per idle clone of the biggest burst / a lone restored clone's: "
                      + ", ".join(f"{fn} {_fmt(v, 3)}"
                                  for fn, v in data["pss_burst_over_lone"].items())]
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


def write_reports(data: dict[str, Any], out_dir: Path, *, plots: bool = True,
                  stamp: str | None = None) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    arch = data["meta"]["arch"] + ("-emulated" if data["meta"]["emulated"] else "")
    stem = out_dir / f"{arch}-{stamp}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    pngs = _plots(data, stem) if plots else []
    text = markdown(data, pngs)
    md_path = stem.with_suffix(".md")
    md_path.write_text(text)
    # latest.md: the newest run on real hardware; an emulated run has its own
    latest = out_dir / ("latest.md" if not data["meta"]["emulated"] else f"latest-{arch}.md")
    shutil.copyfile(md_path, latest)
    return {"json": json_path, "markdown": md_path, "latest": latest,
            "plots": pngs, "markdown_text": text}


# ---- x86_64 vs aarch64 ------------------------------------------------------------
COMPARED = ("cold/restored-l1", "restored-l1/warm", "restored-l1/zygote",
            "rie-cold/restored-l1", "restored-pool/zygote", "cli-restored/restored-l1")
PSS_RATIO = "PSS burst/lone"       # PSS per idle clone, biggest burst / a lone clone


def _ratios_of(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """The run's p50 ratios (run.py stores them; recomputed for older JSONs)."""
    if data.get("ratios"):
        return {fn: dict(r) for fn, r in data["ratios"].items()}
    p50 = {(r["function"], r["start_type"]): r["p50"] for r in data["results"]}
    out: dict[str, dict[str, float | None]] = {}
    for fn in sorted({r["function"] for r in data["results"]}):
        out[fn] = {}
        for name in COMPARED:
            a, b = name.split("/")
            x, y = p50.get((fn, a)), p50.get((fn, b))
            out[fn][name] = round(x / y, 2) if x and y else None
    return out


def newest_results(results_dir: Path) -> list[dict[str, Any]]:
    """The newest run (by meta.date) of each (arch, emulated) in ``results_dir``,
    x86_64 first; each dict gains ``_path``."""
    best: dict[tuple[str, bool], dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            meta = data["meta"]
            key = (meta["arch"], bool(meta["emulated"]))
            date = datetime.fromisoformat(meta["date"])
        except (OSError, ValueError, KeyError, TypeError):
            continue   # not a run.py result
        data["_path"] = str(path)
        old = best.get(key)
        if old is None or datetime.fromisoformat(old["meta"]["date"]) < date:
            best[key] = data
    return [best[k] for k in sorted(best, key=lambda k: (k[0] != "x86_64", k))]


def compare_markdown(runs: list[dict[str, Any]], plot: str | None = None) -> str:
    """One table: rows (function, ratio), one column of p50 ratios per run."""
    labels = [r["meta"]["arch_label"] for r in runs]
    lines = ["# snapstart: x86_64 vs aarch64 — ratios of p50 start latency", "",
             "Absolute times under QEMU TCG emulation mean nothing; only the ratios "
             "between start types of the same run are compared.", ""]
    for r in runs:
        m = r["meta"]
        lines.append(f"- **{m['arch_label']}**: {m['cpu_model']}, {m['cores']} cores, "
                     f"kernel {m['kernel']}, CRIU {m['criu_version']}, Python "
                     f"{m['python_version']}, emulated: {str(m['emulated']).lower()}, "
                     f"N={m['n']}, {m['date']} (`{Path(r['_path']).name}`)"
                     if "_path" in r else f"- **{m['arch_label']}**")
    lines += ["", "| function | ratio | " + " | ".join(labels) + " |",
              "|---|---|" + "---:|" * len(runs)]
    ratios = [_ratios_of(r) for r in runs]
    for rr, run in zip(ratios, runs):
        for fn, value in (run.get("pss_burst_over_lone") or {}).items():
            rr.setdefault(fn, {})[PSS_RATIO] = value
    fns = sorted({fn for rr in ratios for fn in rr})
    for fn in fns:
        for name in COMPARED + (PSS_RATIO,):
            values = [(rr.get(fn) or {}).get(name) for rr in ratios]
            if all(v is None for v in values):
                continue          # measured by no run (e.g. the model has no zygote)
            lines.append(f"| {fn} | {name} | " + " | ".join(_fmt(v) for v in values) + " |")
    if plot:
        lines += ["", f"![ratios]({Path(plot).name})"]
    return "\n".join(lines) + "\n"


def compare_plot(runs: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ratios = [_ratios_of(r) for r in runs]
    fns = sorted({fn for rr in ratios for fn in rr})
    groups = [(fn, name) for fn in fns for name in COMPARED]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(groups)), 4.5))
    width = 0.8 / max(1, len(runs))
    for i, (run, rr) in enumerate(zip(runs, ratios)):
        xs = [j + i * width for j in range(len(groups))]
        ys = [(rr.get(fn) or {}).get(name) or 0 for fn, name in groups]
        ax.bar(xs, ys, width, label=run["meta"]["arch_label"])
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(groups))],
                  [f"{fn}\n{name}" for fn, name in groups], fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("ratio of p50 latencies (log)")
    ax.set_title("snapstart start-type ratios: x86_64 vs aarch64")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def write_comparison(results_dir: Path, *, plots: bool = True) -> tuple[Path, str] | None:
    runs = newest_results(results_dir)
    if not runs:
        return None
    png = compare_plot(runs, results_dir / "compare-latest.png") if plots else None
    text = compare_markdown(runs, png)
    md = results_dir / "compare-latest.md"
    md.write_text(text)
    return md, text


def _stamp_of(data: dict[str, Any]) -> str:
    return datetime.fromisoformat(data["meta"]["date"]).strftime("%Y%m%dT%H%M%SZ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render or compare benchmark results")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="Markdown + plots for one result JSON")
    r.add_argument("json", type=Path)
    r.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    c = sub.add_parser("compare", help="x86_64 vs aarch64 ratio table + plot")
    c.add_argument("--results", type=Path,
                   default=Path(__file__).resolve().parent / "results")
    c.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "render":
        data = json.loads(args.json.read_text())
        paths = write_reports(data, args.out, stamp=_stamp_of(data))
        print("wrote " + ", ".join(str(p) for k, p in paths.items()
                                   if k not in ("markdown_text", "latest")), file=sys.stderr)
        return 0
    done = write_comparison(args.results, plots=not args.no_plots)
    if done is None:
        print(f"no results in {args.results}", file=sys.stderr)
        return 1
    print(done[1])
    print(f"wrote {done[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
