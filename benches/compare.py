#!/usr/bin/env python3
"""The proxy's rows against nginx's plain hop, round by round, from a load run's raw data.

    python3 benches/compare.py                      # the newest run under target/bench-harness/work
    python3 benches/compare.py path/to/raw-*.tsv    # a given run

With rows `base-…` (a second build, `PROXY_BIN_BASE=path benches/load.sh`), it also gives
each target row against the same row of that build, round by round.

The harness's results file gives each row's median over the rounds. On two shared cores a
round's figures move by 10-30 % with the host (nginx's own hop as much as any row), so a
ratio of two medians is decided by the noise when the two are close. Each round runs every
row once, in turn, so a row and nginx's plain hop in the same round saw the same host: this
script takes the ratio within each round and gives its median with a distribution-free
confidence interval (order statistics of the per-round ratios, coverage >= 95 %, no
assumption about the noise's shape). A target reads "met" when the whole interval is on the
target's side of 1.00, "missed" when the whole interval is on the other side, and "within
noise" when the interval holds 1.00: the run cannot tell the two apart.

The targets (BENCHMARKS.md, "Targets"): CPU us/request <= nginx plain's; req/s >= nginx plain's; p99 <=
nginx plain's (keep-alive, 32 connections); req/s with a new connection per request >=
nginx plain's. Peer rows (HAProxy's plain hop, nginx's token map) are shown the same way
for scale.
"""

import csv
import glob
import math
import os
import statistics
import sys

BASE = "nginx-plain"
TARGETS = [
    "proxy-basic-argon2-cached",
    "proxy-api-key",
    "proxy-jwt-rs256",
    "proxy-jwt-es256",
    "proxy-session",
]
PEERS = ["haproxy-plain", "nginx-map-token", "nginx-map-token-full"]
# Which side of 1.00 meets the target: CPU and p99 must not exceed nginx's, req/s must not
# fall below it.
LOWER_IS_BETTER = {"cpu": True, "p99": True, "rps": False}


def median_interval(values, coverage=0.95):
    """The median of `values` and a distribution-free interval for it: the k-th smallest and
    k-th largest value, with k the largest order whose interval covers the median with at
    least `coverage` (binomial(n, 1/2) tails). None for the interval when n is too small."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        return None, None
    med = statistics.median(xs)
    # P(X < k) for X ~ Binomial(n, 1/2); the interval [x_(k), x_(n-k+1)] misses the median
    # with probability 2 * P(X < k).
    best = None
    tail = 0.0
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2**n
        if 2 * tail <= 1 - coverage:
            best = k
        else:
            break
    if best is None:
        return med, None
    return med, (xs[best - 1], xs[n - best])


def verdict(interval, lower_is_better, ratios=()):
    """"met", "missed" or "within noise" from the interval; with too few rounds for one,
    from every round's ratio ("in every round") or "mixed"."""
    if interval is None:
        if not ratios:
            return "no rounds"
        good = [r <= 1.0 if lower_is_better else r >= 1.0 for r in ratios]
        return "met in every round" if all(good) else "missed in every round" if not any(good) else "mixed"
    lo, hi = interval
    if lower_is_better:
        return "met" if hi <= 1.0 else "missed" if lo > 1.0 else "within noise"
    return "met" if lo >= 1.0 else "missed" if hi < 1.0 else "within noise"


def load(path):
    """{mode: {target: {round: row}}} from the harness's raw TSV."""
    runs = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            try:
                rnd = int(row["round"])
                if rnd == 0:
                    continue  # the warm-up pass
                rec = {
                    "rps": float(row["rps"]),
                    "p99": float(row["p99_us"]) / 1000.0,
                    "cpu": float(row["svc_cpu_us_per_req"]),
                }
            except (KeyError, ValueError):
                continue
            runs.setdefault(row["mode"], {}).setdefault(row["target"], {})[rnd] = rec
    return runs


def paired(rows, target, metric, against=BASE):
    """Per-round ratios of `target` to the row `against` (nginx's plain hop), for the rounds
    both ran."""
    base, mine = rows.get(against, {}), rows.get(target, {})
    out = []
    for rnd in sorted(set(base) & set(mine)):
        b = base[rnd][metric]
        if b > 0:
            out.append(mine[rnd][metric] / b)
    return out


def fmt_interval(med, interval, ratios=()):
    if med is None:
        return "-"
    if interval is None:
        if len(ratios) > 1:
            return f"{med:.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})"
        return f"{med:.3f}"
    return f"{med:.3f} [{interval[0]:.3f}-{interval[1]:.3f}]"


def report(path, out=sys.stdout):
    runs = load(path)
    ka = runs.get("ka", {})
    close = runs.get("close", {})
    if BASE not in ka:
        out.write(f"compare.py: no {BASE} row in {path}\n")
        return 1
    n = len(ka[BASE])
    out.write(f"# The proxy against nginx's plain hop, round by round ({os.path.basename(path)})\n\n")
    out.write(
        f"Keep-alive on, {n} rounds. Each cell: the median of the per-round ratios to nginx's plain hop "
        "[a distribution-free interval for that median, >= 95 %; with fewer than 6 rounds there is "
        "none: the rounds' range, and whether every round met the target], then the verdict.\n\n"
    )
    out.write("| row | CPU us/req (median) | CPU ratio | req/s ratio | p99 ratio | rounds with CPU not above nginx's |\n")
    out.write("|---|---:|---|---|---|---:|\n")
    verdicts = []
    for target in [BASE] + PEERS + TARGETS:
        if target not in ka:
            continue
        cpu_med = statistics.median(r["cpu"] for r in ka[target].values())
        cells = []
        ratios_of = {metric: paired(ka, target, metric) for metric in ("cpu", "rps", "p99")}
        for metric, ratios in ratios_of.items():
            med, interval = median_interval(ratios)
            if target == BASE:
                cells.append("1.00")
                continue
            v = verdict(interval, LOWER_IS_BETTER[metric], ratios)
            if target in TARGETS:
                verdicts.append((target, metric, v))
            cells.append(f"{fmt_interval(med, interval, ratios)} {v}")
        cpu_ratios = ratios_of["cpu"]
        not_above = sum(1 for r in cpu_ratios if r <= 1.0)
        label = f"**{target}**" if target in TARGETS else target
        out.write(f"| {label} | {cpu_med:.1f} | {cells[0]} | {cells[1]} | {cells[2]} | {not_above} of {len(cpu_ratios)} |\n")
    if BASE in close:
        rounds = len(close[BASE])
        out.write(
            f"\nKeep-alive off, {rounds} round(s): ratios to nginx's plain hop, read the same way.\n\n"
        )
        out.write("| row | req/s ratio | CPU ratio |\n|---|---|---|\n")
        for target in TARGETS:
            if target not in close:
                continue
            ratios = paired(close, target, "rps")
            cpu = paired(close, target, "cpu")
            med, interval = median_interval(ratios)
            cmed, cint = median_interval(cpu)
            v = verdict(interval, False, ratios)
            verdicts.append((target, "close", v))
            out.write(f"| **{target}** | {fmt_interval(med, interval, ratios)} {v} | {fmt_interval(cmed, cint, cpu)} |\n")
    based = [t for t in TARGETS if "base-" + t[len("proxy-"):] in ka]
    if based:
        out.write(
            "\nThis build against the base build (`PROXY_BIN_BASE`, rows `base-…`), round by round: "
            "each cell the median of the per-round ratios [interval], then which build it favours "
            "(\"this\" or \"base\" when the whole interval is on one side of 1.00).\n\n"
        )
        out.write("| row | CPU ratio | req/s ratio | p99 ratio |\n|---|---|---|---|\n")
        for target in based:
            cells = []
            for metric in ("cpu", "rps", "p99"):
                ratios = paired(ka, target, metric, against="base-" + target[len("proxy-"):])
                med, interval = median_interval(ratios)
                v = verdict(interval, LOWER_IS_BETTER[metric], ratios)
                v = {"met": "this", "missed": "base", "met in every round": "this in every round",
                     "missed in every round": "base in every round"}.get(v, v)
                cells.append(f"{fmt_interval(med, interval, ratios)} {v}")
            out.write(f"| {target} | {cells[0]} | {cells[1]} | {cells[2]} |\n")
    counts = {}
    for _, _, v in verdicts:
        counts[v] = counts.get(v, 0) + 1
    summary = ", ".join(f"{counts[k]} {k}" for k in ("met", "met in every round", "within noise", "mixed", "missed", "missed in every round") if k in counts)
    out.write(f"\nTarget cells: {summary}.\n")
    return 0


def newest():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-harness", "work")
    found = sorted(glob.glob(os.path.join(root, "raw-*.tsv")))
    return found[-1] if found else None


def main(argv):
    path = argv[1] if len(argv) > 1 else newest()
    if not path or not os.path.exists(path):
        sys.stderr.write("compare.py: no raw-*.tsv given or found (run benches/load.sh first)\n")
        return 2
    return report(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
