"""Benchmark function `data`: numpy + pandas imported at init (the expensive part of
a cold start), a small DataFrame built and summarised per request."""
import numpy as np
import pandas as pd

_RNG = np.random.default_rng()


def handler(event, context):
    rows = int((event or {}).get("rows", 100))
    frame = pd.DataFrame({"group": np.arange(rows) % 4,
                          "value": _RNG.standard_normal(rows)})
    summary = frame.groupby("group")["value"].agg(["count", "mean"]).round(6)
    return {"rows": rows, "summary": summary.reset_index().to_dict(orient="records")}
