#!/usr/bin/env python3
"""telltale vs River on the same 1 M-point stream, same machine, one run.

Usage (scripts/compare-river.sh sets up the venv and the binary):
    compare-river.py --river-compare target/release/river-compare [--n 1000000] [--runs 3]

The stream is River's reference stream (a) extended to n points: numpy default_rng(1) standard
normals, +1.0 from the middle on. Each side builds a fresh detector (untimed), then times only
the per-point loop, reading the drift/alarm flag after every point; median of the runs.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from river import drift, stats


def stream(n):
    e = np.random.default_rng(1).standard_normal(n)
    return np.where(np.arange(n) >= n // 2, 1.0, 0.0) + e


def timed(runs, f):
    secs, count = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        count = f()
        secs.append(time.perf_counter() - t)
    return statistics.median(secs), count


def river_page_hinkley(xs):
    d = drift.PageHinkley()
    c = 0
    for x in xs:
        d.update(x)
        if d.drift_detected:
            c += 1
    return c


def river_ewma_zscore(xs, fading=0.01, thr=4.0):
    m, v = stats.EWMean(fading_factor=fading), stats.EWVar(fading_factor=fading)
    c = 0
    for x in xs:
        var = v.get()
        z = (x - m.get()) / math.sqrt(var) if var > 0.0 else 0.0
        if z > thr or z < -thr:
            c += 1
        m.update(x)
        v.update(x)
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--river-compare", required=True, help="path of the river-compare binary")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()

    arr = stream(a.n)
    xs = arr.tolist()
    with tempfile.NamedTemporaryFile(suffix=".f64", delete=False) as f:
        f.write(arr.astype("<f8").tobytes())
        path = f.name
    try:
        ours = json.loads(
            subprocess.run(
                [a.river_compare, path, str(a.runs)], check=True, capture_output=True, text=True
            ).stdout
        )
    finally:
        os.unlink(path)

    ph_s, ph_c = timed(a.runs, lambda: river_page_hinkley(xs))
    ew_s, ew_c = timed(a.runs, lambda: river_ewma_zscore(xs))
    rows = [
        ("Page-Hinkley (River defaults)", a.n / ph_s, ph_c,
         ours["page_hinkley"]["pts_per_s"], ours["page_hinkley"]["drifts"], "drifts"),
        ("EWMA z-score, fading 0.01, |z| > 4", a.n / ew_s, ew_c,
         ours["ewma_zscore"]["pts_per_s"], ours["ewma_zscore"]["alarms"], "alarms"),
        ("  same, telltale's batch form", a.n / ew_s, ew_c,
         ours["ewma_zscore_batch"]["pts_per_s"], ours["ewma_zscore_batch"]["alarms"], "alarms"),
        ("  same, telltale's z-only path", a.n / ew_s, ew_c,
         ours["ewma_z_only"]["pts_per_s"], ours["ewma_z_only"]["alarms"], "alarms"),
    ]
    print(f"{a.n} points, median of {a.runs} runs, one thread each")
    print(f"{'detector':38} {'River pts/s':>14} {'telltale pts/s':>15} {'ratio':>8}   flags River / telltale")
    for name, r, rc, t, tc, what in rows:
        print(f"{name:38} {r:>14,.0f} {t:>15,.0f} {t / r:>7.0f}x   {what} {rc} / {tc}")


if __name__ == "__main__":
    main()
