"""Smoke test of the benchmark suite (benches/run.py): runs it on `hello` with N=2
and checks the shape of the JSON it writes. No timing assertions (benchmarks live in
benches/, numbers are data, not pass/fail)."""

from __future__ import annotations

import glob
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benches" / "run.py"
ALWAYS = {"cold", "restored-l1", "restored-l2", "warm", "zygote", "process"}


def _numeric(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x >= 0


@pytest.mark.timeout(120)
def test_bench_suite_on_hello_writes_every_start_type(tmp_path):
    shm_before = set(glob.glob("/dev/shm/snapstart-bench-*"))
    proc = subprocess.run([sys.executable, str(RUN), "--n", "2", "--functions", "hello",
                           "--burst", "1,2", "--burst-functions", "hello",
                           "--out", str(tmp_path), "--no-plots"],
                          capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| hello | restored-l1 |" in proc.stdout          # the table is printed
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert (tmp_path / "latest.md").exists()

    meta = data["meta"]
    for key in ("arch", "cpu_model", "cores", "kernel", "criu_version", "python_version",
                "emulated", "n", "date"):
        assert key in meta, key
    assert meta["n"] == 2 and isinstance(meta["emulated"], bool)

    by_type = {r["start_type"]: r for r in data["results"] if r["function"] == "hello"}
    expected = set(ALWAYS)
    if "rie" not in data["unavailable"]:
        expected |= {"rie-cold", "rie-warm"}
    if "warm-serve" not in data["unavailable"]:
        expected.add("warm-serve")
    assert expected <= set(by_type), sorted(expected - set(by_type))
    for start_type in expected:
        row = by_type[start_type]
        assert row["errors"] == 0, (start_type, row["error_examples"], row["notes"])
        assert row["n"] == 2, start_type
        for key in ("min", "p50", "p90", "p99"):
            assert _numeric(row[key]), (start_type, key, row[key])

    ratios = data["ratios"]["hello"]
    for key in ("cold/restored-l1", "restored-l1/warm", "restored-l1/zygote"):
        assert _numeric(ratios[key]), key
    assert [b["n"] for b in data["burst"]] == [1, 2]
    for b in data["burst"]:
        assert b["errors"] == 0 and _numeric(b["completion_ms"]) and _numeric(b["p99"])
    assert data["memory"] and all(m["rss_kib"] > 0 and m["pss_kib"] > 0
                                  for m in data["memory"])
    # everything the run created on tmpfs is gone
    assert set(glob.glob("/dev/shm/snapstart-bench-*")) == shm_before
