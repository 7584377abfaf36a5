"""The tuner's report folder (CSV + PNG plots + markdown) and `--apply` (protobuf, diff shown)."""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path

from modelrepo.perf.tune import CURVE_GATHER_US, TuneResult, predicted_vs, with_knobs
from modelrepo.perf.tune_search import CURRENT
from modelrepo.triton.model_config import CONFIG_FILENAME, format_config, read_config


def reproducible(command: str, input_data: str) -> str:
    """perf_analyzer's command as run, made portable: default gRPC port (modelrepo serve), the kept input
    data, no temp CSV."""
    words, out, skip = command.split(), [], False
    for index, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word in ("-u", "-f", "--input-data"):
            skip = True
            out += {"-u": ["-u", "localhost:8001"], "-f": [], "--input-data": ["--input-data", input_data]}[word]
            continue
        out.append(word)
    return " ".join(out)  # `modelrepo perf-analyzer` adds the admin header by itself


def write_report(result: TuneResult, folder: Path, command: str, input_data: str = "random") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [m.row() for m in result.measurements]
    with open(folder / "measurements.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_throughput_vs_p99(result, folder / "throughput_vs_p99.png")
    plot_latency_split(result, folder / "latency_split.png")
    (folder / "summary.md").write_text(summary(result, command, input_data))
    return folder


def _verified(result: TuneResult):
    return [m for m in result.measurements if m.phase in ("baseline", "verify", "decide")]


def plot_throughput_vs_p99(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for m in _verified(result):
        if not math.isfinite(m.p99_ms):
            continue  # refused requests: no latency to place (the table says so)
        marker = "*" if m.candidate == result.winner else "o"
        axes.scatter(m.p99_ms, m.throughput_per_s, marker=marker, s=140 if marker == "*" else 40)
        axes.annotate(m.candidate.label(), (m.p99_ms, m.throughput_per_s), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")
    axes.axvline(result.budget_ms, color="red", linestyle="--", label=f"p99 budget {result.budget_ms:g} ms")
    axes.set_xlabel("p99 latency (ms)")
    axes.set_ylabel("throughput (inferences/s)")
    axes.set_title(f"{result.model}: candidates at {result.load.describe()} (star: chosen)")
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_latency_split(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [m for m in _verified(result) if math.isfinite(m.p50_ms)]  # refused runs have no split
    labels = [f"{m.phase}\n{m.candidate.label()}".replace(", ", "\n") for m in runs]
    queue = [m.queue_ms for m in runs]
    compute = [m.compute_ms for m in runs]
    other = [max(m.p50_ms - q - c, 0) for m, q, c in zip(runs, queue, compute)]
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(runs)), 4.5))
    positions = range(len(runs))
    axes.bar(positions, queue, label="server queue")
    axes.bar(positions, compute, bottom=queue, label="server compute")
    axes.bar(positions, other, bottom=[q + c for q, c in zip(queue, compute)], label="rest of p50 (client, network, hand-offs)")
    axes.set_xticks(list(positions), labels, fontsize=6)
    axes.set_ylabel("ms per request (server: averages over the tuned models)")
    axes.set_title(f"{result.model}: where the latency goes")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def phase_seconds(result: TuneResult) -> str:
    totals: dict[str, float] = {}
    for measurement in result.measurements:
        totals[measurement.phase] = totals.get(measurement.phase, 0.0) + measurement.seconds
    return ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in totals.items())


def _curve_method(result: TuneResult) -> str:
    if result.curve_gathered:  # see tune.gathers_batches
        return (f"b one-row requests at concurrency b, gathered into one batch: preferred batch b, "
                f"queue delay ≤ {CURVE_GATHER_US / 1000:g} ms")
    return "1 request of b rows, concurrency 1, no queue delay"


def _target_column(result: TuneResult) -> str:
    return "within budget, rate served" if result.load.request_rate else "within budget"


def summary(result: TuneResult, command: str, input_data: str = "random") -> str:
    lines = [
        f"# Tuning {result.model} for p99 ≤ {result.budget_ms:g} ms at {result.load.describe()}",
        "",
        f"Command: `{command}` — {result.seconds:.0f} s, {len(result.measurements)} perf_analyzer measurements.",
        f"Time by phase (config loads included): {phase_seconds(result)}.",
        f"Tuned models: {', '.join(result.tuned_models)}; instance count applied to `{result.bottleneck}` "
        "(largest compute share).",
        "",
        f"## Batch-size → latency curve ({_curve_method(result)}, no queue policy or priority levels, 1 instance)",
        "",
        "| batch rows | p50 (ms) | rows per executed batch |",
        "| --- | --- | --- |",
        *[f"| {m.batch_rows} | {m.p50_ms:.1f} | {m.rows_per_batch:.2f} |" for m in result.measurements if m.phase == "curve"],
        "",
        "## Shortlist (predicted) and verification (measured)",
        "",
        "| candidate | predicted batch | predicted /s | predicted p99 (ms) |",
        "| --- | --- | --- | --- |",
        *[f"| {p['candidate']} | {p['predicted_batch']} | {p['predicted_throughput_per_s']} | {p['predicted_p99_ms']} |"
          for p in predicted_vs(result)],
        "",
        f"| phase | candidate | throughput (/s) | p50 (ms) | p99 (ms) | {_target_column(result)} |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {m.phase} | {m.candidate.label()} | {m.throughput_per_s:.1f} | {m.p50_ms:.1f} | {m.p99_ms:.1f} | "
          f"{result.target.verdict(m.throughput_per_s, m.p99_ms)} |" for m in _verified(result)],
        "",
    ]
    if result.winner is None:
        lines += [f"**No configuration met the budget** ({result.confidence}).", ""]
        return "\n".join(lines)
    verify = next(m for m in result.measurements if m.candidate == result.winner)
    lines += [
        f"**Chosen: {result.winner.label()}.** Confidence: {result.confidence}.",
        "",
        "Reproduce: load the config below (`modelrepo tune … --apply` writes it), start the server, then:",
        "",
        f"    {reproducible(verify.command, input_data)}",
        "",
        *[f"`{name}` config:\n\n```\n{format_config(cfg)}```\n" for name, cfg in result.configs.items()],
        "Plots: `throughput_vs_p99.png`, `latency_split.png`; every measurement: `measurements.csv`.",
    ]
    return "\n".join(lines) + "\n"


def header_comments(text: str) -> str:
    """The leading `#` lines of a config.pbtxt: kept when the tuner rewrites it."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def apply_to_repository(repository: Path, result: TuneResult) -> str:
    """Write the winner's knobs into each tuned model's config.pbtxt; return the unified diff."""
    if result.winner == CURRENT:
        return ""  # the repository's own config won: nothing to write
    diffs = []
    for name in result.configs:
        path = Path(repository) / name / CONFIG_FILENAME
        before = path.read_text()
        instances = result.winner.instances if name == result.bottleneck else None
        config = with_knobs(read_config(path.parent), result.winner, instances)
        after = header_comments(before) + format_config(config)
        path.write_text(after)
        diffs += difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                      f"a/{name}/{CONFIG_FILENAME}", f"b/{name}/{CONFIG_FILENAME}")
    return "".join(diffs)
