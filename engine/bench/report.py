"""What `engine bench` prints and writes: the table, the JSON file, the latency plot.

    print(table(result))
    write_json(result, "out.json")
    write_plot(result, "out.png")      # needs matplotlib (pip install 'engine[plot]')
"""

from __future__ import annotations

import json
import math

from ..errors import EngineError


def _num(v, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, fmt)


def _grid(header: list, rows: list) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def table(result: dict) -> str:
    """The human table for either mode, then a line per framework that did not run."""
    if result["mode"] == "server":
        header = ["concurrency", "rps", "p50 ms", "p90 ms", "p99 ms", "errors", "loadgen cores"]
        rows = [[r["concurrency"], _num(r["rps"], ".0f"), _num(r["p50_ms"], ".3f"), _num(r["p90_ms"], ".3f"),
                 _num(r["p99_ms"], ".3f"), r["errors"],
                 _num(r["loadgen_cores"], ".2f") + (" (generator-bound)" if r["loadgen_bound"] else "")]
                for r in result["results"]]
        return f"{result['url']} model {result['model']} ({result['settings']['kind']})\n" + _grid(header, rows)
    rss = {f["name"]: f.get("peak_rss_mib") for f in result["frameworks"]}
    header = ["framework", "batch", "p50 ms", "p90 ms", "p99 ms", "items/s", "cores", "peak RSS MiB",
              "max abs diff", "max rel diff", "speed-up"]
    rows = []
    for r in result["results"]:
        speed = "-" if r["speedup_vs_best_peer"] is None else f"{r['speedup_vs_best_peer']:.2f}x vs {r['best_peer']}"
        rows.append([r["framework"], r["batch"], _num(r["p50_ms"], ".3f"), _num(r["p90_ms"], ".3f"),
                     _num(r["p99_ms"], ".3f"), _num(r["throughput_per_s"], ".1f"), _num(r["cpu_cores"], ".2f"),
                     _num(rss.get(r["framework"]), ".0f"), _num(r["max_abs_diff"], ".2e"),
                     _num(r["max_rel_diff"], ".2e"), speed])
    s = result["settings"]
    amount = f"{s['runs']} runs" if s["runs"] else f"{s['seconds']:g} s"
    out = [f"{result['model']}: {s['threads']} thread(s), {amount} per framework and batch, interleaved",
           _grid(header, rows)]
    for f in result["frameworks"]:
        if f["status"] != "ok":
            out.append(f"{f['name']}: {f['reason']}")
    return "\n".join(out)


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(sanitize(result), f, indent=1, allow_nan=False)


def sanitize(result: dict) -> dict:
    """inf (outputs of another shape) becomes None: strict JSON has no infinity."""
    for r in result.get("results", ()):
        for k in ("max_abs_diff", "max_rel_diff"):
            if isinstance(r.get(k), float) and math.isinf(r[k]):
                r[k], r["outputs_mismatch"] = None, True
    return result


def write_plot(result: dict, path: str) -> None:
    """Latency distributions: one panel per batch size, one box per framework."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EngineError("bench: --plot needs matplotlib (pip install 'engine[plot]')") from None
    if result["mode"] != "model":
        raise EngineError("bench: --plot draws latency distributions of model mode, not server mode")
    batches = result["settings"]["batches"]
    fig, axes = plt.subplots(1, len(batches), figsize=(4 * len(batches), 3.5), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in result["results"] if r["batch"] == batch]
        ax.boxplot([r["latencies_ms"] for r in rows], showfliers=True)
        ax.set_xticks(range(1, len(rows) + 1), [r["framework"] for r in rows])
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_yscale("log")  # a few slow outliers would otherwise flatten every box
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
