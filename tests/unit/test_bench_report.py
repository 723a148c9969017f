"""benches/report.py: the x86_64-vs-aarch64 ratio table (newest run per arch,
side-by-side ratios). No root, no CRIU, no VM."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "benches" / "report.py"


def _load_report():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(arch, emulated, date, p50s, label=None, with_ratios=True):
    results = [{"function": fn, "start_type": st, "via": "manager", "n": 3, "min": v,
                "p50": v, "p90": v, "p99": v, "errors": 0, "error_examples": [],
                "notes": []}
               for fn, row in p50s.items() for st, v in row.items()]
    data = {"meta": {"arch": arch, "arch_label": label or arch, "cpu_model": "cpu",
                     "cores": 2, "kernel": "6.1", "criu_version": "3.17.1",
                     "python_version": "3.11.2", "emulated": emulated, "n": 3,
                     "date": date},
            "results": results, "burst": [], "memory": [], "publish": {},
            "unavailable": {}}
    if with_ratios:   # as run.py stores them
        data["ratios"] = {fn: {"cold/restored-l1": round(r["cold"] / r["restored-l1"], 2),
                               "restored-l1/warm": round(r["restored-l1"] / r["warm"], 2),
                               "restored-l1/zygote": round(r["restored-l1"] / r["zygote"], 2)}
                          for fn, r in p50s.items()}
    return data


def test_compare_table_side_by_side(tmp_path):
    report = _load_report()
    x86 = {"hello": {"cold": 100.0, "restored-l1": 40.0, "warm": 1.0, "zygote": 4.0}}
    old_x86 = {"hello": {"cold": 999.0, "restored-l1": 1.0, "warm": 1.0, "zygote": 1.0}}
    arm = {"hello": {"cold": 3000.0, "restored-l1": 1000.0, "warm": 20.0, "zygote": 250.0},
           "data": {"cold": 9000.0, "restored-l1": 1500.0, "warm": 30.0, "zygote": 500.0}}
    (tmp_path / "x86_64-1.json").write_text(json.dumps(
        _result("x86_64", False, "2026-11-28T03:00:00+00:00", x86)))
    (tmp_path / "x86_64-0.json").write_text(json.dumps(
        _result("x86_64", False, "2026-11-01T03:00:00+00:00", old_x86)))
    (tmp_path / "aarch64-emulated-1.json").write_text(json.dumps(
        _result("aarch64", True, "2026-11-28T05:00:00+00:00", arm,
                label="aarch64 (QEMU TCG, emulated)", with_ratios=False)))
    (tmp_path / "notes.json").write_text("[]")          # not a result: ignored

    runs = report.newest_results(tmp_path)
    assert [r["meta"]["arch"] for r in runs] == ["x86_64", "aarch64"]
    assert runs[0]["meta"]["date"].startswith("2026-11-28")   # the newest x86_64 run

    md, text = report.write_comparison(tmp_path, plots=False)
    assert md == tmp_path / "compare-latest.md" and md.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| function | ratio | x86_64 | aarch64 (QEMU TCG, emulated) |"
    assert "| hello | cold/restored-l1 | 2.50 | 3.00 |" in rows
    assert "| hello | restored-l1/warm | 40.00 | 50.00 |" in rows
    assert "| hello | restored-l1/zygote | 10.00 | 4.00 |" in rows
    # a function only one arch measured: "-" in the other column
    assert "| data | cold/restored-l1 | - | 6.00 |" in rows
    assert len(rows) == 1 + 2 * 3        # header + (2 functions x 3 ratios)
    assert "emulated: true" in text and "CRIU 3.17.1" in text
