#!/usr/bin/env python3
"""scripts/bench's last step: raw.tsv (and kafka.txt) → results.json, report.md, and
docs/img/throughput.png (gnuplot). Usage: bench-report.py RAW OUT_DIR N MEM_N"""
import json
import os
import re
import subprocess
import sys

raw_path, out, n_main, mem_n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
raw = {}
for line in open(raw_path):
    k, v = line.rstrip("\n").split("\t", 1)
    try:
        raw[k] = int(v)
    except ValueError:
        try:
            raw[k] = float(v)
        except ValueError:
            raw[k] = v

kafka_txt = os.path.join(out, "kafka.txt")
if os.path.exists(kafka_txt) and "load_kafka" in raw:
    m = re.search(r"bare \(kappa's fetch settings\) (\d+)/s, kappa (\d+)/s", open(kafka_txt).read())
    if m:
        raw["kafka_bare_records_per_s"], raw["kafka_kappa_events_per_s"] = int(m[1]), int(m[2])

sizes = sorted({int(k.split("_")[-1]) for k in raw if k.startswith("e2e_two_")})
rows = []  # (target, measured, met)


def target(name, value, ok, fmt):
    rows.append((name, fmt, "met" if ok else "missed"))
    return ok


def every_size(key, floor, what):
    """A throughput target that must hold at every N measured (issue 21: N = 1M…10M)."""
    values = [(n, raw[f"{key}_{n}"]) for n in sizes if f"{key}_{n}" in raw]
    if values:
        low = min(v for _, v in values)
        target(f"≥ {floor:,.0f} events/s on {what}, at every N", low, low >= floor,
               ", ".join(f"{v:,} at {n:,}" for n, v in values) + f" (lowest {low / floor - 1:+.0%})")


every_size("e2e_two", 3e6, "two cores")
every_size("e2e_one", 1.8e6, "one core")
if f"e2e_two_{n_main}" in raw:
    two, one, ref = raw[f"e2e_two_{n_main}"], raw[f"e2e_one_{n_main}"], raw[f"floor_{n_main}"]
    target("≥ 5× the reference floor", two / ref, two / ref >= 5,
           f"{two / ref:.2f}× (two cores), {one / ref:.2f}× (one core); floor {ref:,} records/s")
if f"duckdb_{n_main}" in raw:
    two, ddb = raw[f"e2e_two_{n_main}"], raw[f"duckdb_{n_main}"]
    target("≥ 4× DuckDB on the same file (two cores each)", two / ddb, two / ddb >= 4,
           f"{two / ddb:.2f}× (DuckDB {ddb:,} events/s)")
if "replay_one_core_records_per_s" in raw and f"e2e_one_{n_main}" in raw:
    r = raw["replay_one_core_records_per_s"] / raw[f"e2e_one_{n_main}"]
    target("a replay into a new version within 10 % of the run (one core)", r, r >= 0.9,
           f"{r:.0%} of the run ({raw['replay_one_core_records_per_s']:,} records/s)")
if f"declared_one_{n_main}" in raw:
    c1 = 1 - raw[f"declared_one_{n_main}"] / raw[f"e2e_one_{n_main}"]
    c2 = 1 - raw[f"declared_two_{n_main}"] / raw[f"e2e_two_{n_main}"]
    target("three declared aggregates cost < 15 % of throughput", max(c1, c2), max(c1, c2) < 0.15,
           f"{c1:.1%} (one core), {c2:.1%} (two cores)")
if sizes and sizes[0] != sizes[-1]:
    lo, hi = sizes[0], sizes[-1]
    r2 = raw[f"e2e_two_{lo}"] / raw[f"e2e_two_{hi}"]
    r1 = raw[f"e2e_one_{lo}"] / raw[f"e2e_one_{hi}"]
    # Cost per event is 1 / throughput: its change from lo to hi is lo's rate over hi's.
    target(f"cost per event at {hi:,} within 10 % of {lo:,}", max(abs(r1 - 1), abs(r2 - 1)),
           abs(r1 - 1) <= 0.1 and abs(r2 - 1) <= 0.1,
           f"{r2 - 1:+.0%} (two cores), {r1 - 1:+.0%} (one core)")
if "mem_50000_rss_mb" in raw:
    v = raw["mem_50000_rss_mb"]
    target(f"peak RSS < 300 MB, {mem_n:,} events over 50,000 products", v, v < 300, f"{v} MB")
if "live_50000_p99_ms" in raw:
    v = raw["live_50000_p99_ms"]
    target("live finalisation p99 < 50 ms at 50k events/s", v, v < 50,
           f"p99 {v} ms (p50 {raw['live_50000_p50_ms']} ms, max {raw['live_50000_max_ms']} ms)")
if "kafka_kappa_events_per_s" in raw:
    v = raw["kafka_kappa_events_per_s"] / raw["kafka_bare_records_per_s"]
    target("Kafka catch-up ≥ 70 % of the bare consumer", v, v >= 0.7,
           f"{v:.2f} ({raw['kafka_kappa_events_per_s']:,} vs {raw['kafka_bare_records_per_s']:,} records/s)")

results = dict(raw)
results["targets"] = [{"target": t, "measured": m, "status": s} for t, m, s in rows]
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)

lines = ["# Benchmark report", "", f"Machine: {raw.get('cpu', '?')}, {raw.get('cores', '?')} cores.", ""]
lines += ["| target | measured | |", "|---|---|---|"]
lines += [f"| {t} | {m} | {s} |" for t, m, s in rows]
if sizes:
    lines += ["", "| N | kappa, one core | kappa, two cores | reference floor | DuckDB, two threads | load before |", "|---|---|---|---|---|---|"]
    for n in sizes:
        ddb = f"{raw[f'duckdb_{n}']:,}" if f"duckdb_{n}" in raw else "-"
        lines.append(f"| {n:,} | {raw[f'e2e_one_{n}']:,} | {raw[f'e2e_two_{n}']:,} | {raw[f'floor_{n}']:,} | {ddb} | {raw.get(f'load_e2e_{n}', '')} |")
for k in ("decode_scanner_records_per_s", "decode_scanner_mb_per_s", "decode_serde_records_per_s",
          "decode_serde_mb_per_s", "core_events_per_s", "replay_one_core_records_per_s"):
    if k in raw:
        lines.append(f"- {k}: {raw[k]:,}")
live = sorted({int(k.split("_")[1]) for k in raw if k.startswith("live_") and k.endswith("_p99_ms")})
if live:
    lines += ["", "| produce rate | p50 | p99 | max | windows |", "|---|---|---|---|---|"]
    for r in live:
        lines.append(f"| {r:,}/s | {raw[f'live_{r}_p50_ms']} ms | {raw[f'live_{r}_p99_ms']} ms | {raw[f'live_{r}_max_ms']} ms | {raw[f'live_{r}_windows']} |")
mem = sorted({int(k.split("_")[1]) for k in raw if k.startswith("mem_") and k.endswith("_rss_mb")})
if mem:
    lines += ["", f"| products | peak RSS ({mem_n:,} events) | open (window, key) at the core's peak | bytes per (window, key) |", "|---|---|---|---|"]
    for p in mem:
        lines.append(f"| {p:,} | {raw[f'mem_{p}_rss_mb']} MB | {raw[f'mem_{p}_keys']:,} | {raw[f'mem_{p}_bytes_per_key']} |")
lines += ["", "Load: " + "; ".join(f"{k[5:]} {v}" for k, v in raw.items() if k.startswith("load_"))]
open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# The plot: throughput against N (left), live latency percentiles (right).
if sizes or live:
    with open(os.path.join(out, "throughput.dat"), "w") as f:
        for n in sizes:
            f.write(f"{n / 1e6} {raw[f'e2e_two_{n}']} {raw[f'e2e_one_{n}']} {raw[f'floor_{n}']} {raw.get(f'duckdb_{n}', 'NaN')}\n")
    with open(os.path.join(out, "latency.dat"), "w") as f:
        for r in live:
            f.write(f"\"{r // 1000}k/s\" {raw[f'live_{r}_p50_ms']} {raw[f'live_{r}_p99_ms']} {raw[f'live_{r}_max_ms']}\n")
    duckdb_line = ""
    if any(f"duckdb_{n}" in raw for n in sizes):
        duckdb_line = ", \\\n     '' using 1:5 with linespoints lw 2 title 'DuckDB, two threads (same JSON lines)'"
    left = f"""
set title 'End-to-end, embedded log to all windows final in redb'
set xlabel 'events (millions)'
set ylabel 'events/s'
set logscale x
set xrange [{sizes[0] / 2e6 if sizes else 0.5}:{sizes[-1] * 2 / 1e6 if sizes else 20}]
set format y '%.1s%c'
set yrange [0:*]
set key bottom right
set grid
plot '{out}/throughput.dat' using 1:2 with linespoints lw 2 title 'kappa, two cores', \\
     '' using 1:3 with linespoints lw 2 title 'kappa, one core', \\
     '' using 1:4 with linespoints lw 2 title 'reference floor (serde_json + HashMap)'{duckdb_line}
unset logscale x
set xrange [*:*]
set format y '%g'
"""
    right = f"""
set title 'Live finalisation latency (watermark past window end → committed)'
set xlabel 'produce rate'
set ylabel 'ms'
set yrange [0:{max([60] + [raw[f'live_{r}_max_ms'] * 1.2 for r in live])}]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set key top left
plot '{out}/latency.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'max', \\
     50 with lines dt 2 lc rgb 'red' title 'p99 target'
"""
    panels = [p for p, have in ((left, sizes), (right, live)) if have]
    script = (f"set terminal pngcairo noenhanced size {600 * len(panels)},480 font ',10'\n"
              "set output 'docs/img/throughput.png'\n"
              f"set multiplot layout 1,{len(panels)}\n" + "".join(panels) + "unset multiplot\n")
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print("plot: docs/img/throughput.png")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no plot: gnuplot failed: {e}", file=sys.stderr)
print(f"results: {out}/results.json, report: {out}/report.md")
