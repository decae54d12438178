"""Every stage side by side: the metrics document, a Markdown table and a CSV table."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from shrinkflow.core.evaluation import with_compression_ratio

__all__ = ["accuracy_size_figure", "build_report", "latency_figure", "sparsity_figure"]

_COLUMNS = [
    ("accuracy", "accuracy", "{:.4f}"),
    ("accuracy_delta_pp", "Δ acc (pp)", "{:+.2f}"),
    ("params_nonzero", "non-zero params", "{:,}"),
    ("sparsity", "sparsity", "{:.1%}"),
    ("artifact_bytes", "artifact bytes", "{:,}"),
    ("compression_ratio", "compression (bytes)", "{:.2f}x"),
    ("packed_bytes", "packed bytes", "{:,}"),
    ("packed_compression_ratio", "compression (packed)", "{:.1f}x"),
    ("macs_nonzero", "MACs (non-zero)", "{:,}"),
    ("teacher_agreement", "agrees with teacher", "{:.1%}"),
    ("latency_b1_p50_ms", "latency b1 p50 (ms)", "{:.3f}"),
]
#: ``throughput_b<N>_sps``: N is the configured large batch (``evaluate.throughput_batch``).
_THROUGHPUT = re.compile(r"throughput_b(\d+)_sps")


def build_report(
    metrics: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    gates: pd.DataFrame | None = None,
    onnx: dict[str, Any] | None = None,
    deployment: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str, pd.DataFrame]:
    """Combine per-stage metrics and stage records into the report outputs.

    A stage whose method was ``none`` is marked ``{"status": "skipped"}`` and carries no metrics
    (its model is its input's). ``compression_ratio`` is teacher artifact bytes over this stage's.
    ``gates``: the validated quality table (``failed_checks`` per stage), shown as its own section.
    ``onnx``: the export's metrics (``onnx_metrics``), kept as ``document["onnx"]`` with status
    ``exported`` and shown beside the PyTorch stages it came from; not a row of the stage table.
    ``deployment``: the export's choice of serving runtime per batch size (``deployment``), shown as
    its own section; it stays out of ``document`` (metrics.json holds one block per model, and
    ``deployment.json`` is its own file).
    """
    teacher = metrics["teacher"]
    document: dict[str, Any] = {}
    for stage, values in metrics.items():
        record = records.get(stage, {"method": "train", "status": "done"})
        if record.get("status") == "skipped":
            document[stage] = {"status": "skipped", "method": record.get("method", "none")}
            continue
        row = with_compression_ratio(values, teacher)
        row["accuracy_delta_pp"] = 100.0 * (values["accuracy"] - teacher["accuracy"])
        document[stage] = {"status": "done", "method": record.get("method"), **row}
        if record.get("method") == "checkpoint":  # a teacher the user brought: which file, exactly
            document[stage].update(
                checkpoint=record.get("checkpoint"), checkpoint_sha256=record.get("sha256")
            )
    # per-layer sparsity is a mapping per stage: in metrics.json and its plot, not a table column
    table = pd.DataFrame.from_dict(document, orient="index").drop(columns=["layer_sparsity"], errors="ignore")
    table.index.name = "stage"
    markdown = _markdown(document) + ("" if gates is None else _gates_markdown(gates))
    if onnx is not None:
        document["onnx"] = {"status": "exported", "method": f"onnx {onnx.get('format')}", **onnx}
        markdown += _onnx_markdown(document)
    if deployment is not None:
        markdown += _deployment_markdown(deployment)
    return document, markdown, table.reset_index()


def _throughput_key(rows: Sequence[dict[str, Any]]) -> str | None:
    """The ``throughput_b<N>_sps`` key the first of ``rows`` that has one carries (N: the batch)."""
    return next((k for row in rows for k in row if _THROUGHPUT.fullmatch(k)), None)


def _throughput_title(key: str | None) -> str:
    match = _THROUGHPUT.fullmatch(key or "")
    return f"throughput b{match.group(1)} (samples/s)" if match else "throughput (samples/s)"


def _table(rows: Sequence[Sequence[str]], columns: Sequence[str], right: Collection[str] = ()) -> str:
    """A Markdown (pipe) table of cells already formatted as text; ``right`` columns align right."""
    frame = pd.DataFrame([list(row) for row in rows], columns=list(columns))
    align = ["right" if name in right else "left" for name in columns]
    # the cells are formatted here (1,234 / +0.50 / 12.0x): tabulate must not parse them as numbers
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def _cell(fmt: str, value: Any) -> str:
    """``value`` formatted, or empty where it is missing (None or NaN)."""
    return "" if value is None or (isinstance(value, float) and value != value) else fmt.format(value)


_QPARAMS = {
    "torch": "QDQ with the PyTorch model's own scales and zero points",
    "calibrated": "QDQ, scales calibrated by ONNX Runtime",
    "dynamic": "int8 weights, activation scales computed per batch (ONNX Runtime dynamic)",
}


def _onnx_markdown(document: dict[str, Any]) -> str:
    """The export beside the PyTorch model it came from and the fp32 teacher in eager PyTorch."""
    onnx, teacher = document["onnx"], document["teacher"]
    source = next(
        (document[s] for s in ("quantized", "distilled", "pruned") if document[s]["status"] == "done"),
        teacher,
    )
    throughput = _throughput_key([onnx])
    rows = []
    for label, row in (
        ("teacher (PyTorch fp32)", teacher),
        ("final model (PyTorch)", source),
        (f"ONNX Runtime ({onnx['format']})", onnx),
    ):
        lat, thr = row["latency_b1_p50_ms"], row.get(throughput or "", float("nan"))
        rows.append(
            [
                label,
                f"{row['accuracy']:.4f}",
                f"{lat:.3f}",
                f"{teacher['latency_b1_p50_ms'] / lat:.2f}x",
                f"{thr:,.0f}",
                f"{thr / teacher.get(throughput or '', float('nan')):.2f}x",
            ]
        )
    columns = [
        "runtime",
        "accuracy",
        "latency b1 p50 (ms)",
        "vs teacher",
        _throughput_title(throughput),
        "vs teacher",
    ]
    return "\n".join(
        [
            "",
            "## ONNX export",
            "",
            f"`data/06_models/final.onnx`: {onnx['format']} ({_QPARAMS.get(onnx.get('qparams'), 'as stored')}), "
            f"{onnx['onnx_bytes']:,} bytes; its predictions agree with the PyTorch model's on "
            f"{onnx['agreement']:.2%} of the test set ({onnx['disagreements']} of {onnx['test_samples']} differ).",
            "",
            _table(rows, columns, right=columns[1:]),
            "",
            f"Timed on {onnx.get('threads', '?')} thread(s); speed ratios are against the teacher in eager PyTorch.",
            "",
        ]
    )


def _gates_markdown(gates: pd.DataFrame) -> str:
    """The quality gates: a row per stage, FAILED with the expectation where one did not hold
    (only reachable with ``on_failure: warn``; a failing gate set to fail stops the run)."""
    failed = gates["failed_checks"].fillna("").astype(str) if "failed_checks" in gates else None
    rows = []
    for i, row in gates.iterrows():
        note = "" if failed is None else failed.iloc[i]
        verdict = f"**FAILED**: {note}" if note else "passed"
        rows.append([str(row["stage"]), f"{100.0 * float(row['accuracy_drop']):+.2f}", verdict])
    n_failed = 0 if failed is None else int((failed != "").sum())
    columns = ["stage", "accuracy drop (pp)", "gate"]
    return "\n".join(
        [
            "",
            "## Quality gates",
            "",
            _table(rows, columns, right=["accuracy drop (pp)"]),
            "",
            f"{n_failed} of {len(gates)} stages failed a gate (suite quality_gates, gx_suites.yml).",
            "",
        ]
    )


def _markdown(document: dict[str, Any]) -> str:
    done = [row for row in document.values() if row["status"] == "done"]
    throughput = _throughput_key(done)
    columns = [*_COLUMNS, *([(throughput, _throughput_title(throughput), "{:,.0f}")] if throughput else [])]
    rows = []
    for stage, row in document.items():
        if row["status"] == "skipped":
            rows.append([stage, row["method"], "skipped", *[""] * (len(columns) - 1)])
        else:
            rows.append(
                [
                    stage,
                    str(row["method"]),
                    *[fmt.format(row[key]) if key in row else "" for key, _, fmt in columns],
                ]
            )
    titles = [title for _, title, _ in columns]
    lines = ["# shrinkflow report", "", _table(rows, ["stage", "method", *titles], right=titles[1:])]
    teacher = document.get("teacher", {})
    if teacher.get("method") == "checkpoint":
        lines += [
            "",
            f"The teacher was loaded from `{teacher['checkpoint']}` (sha256 `{teacher['checkpoint_sha256']}`).",
        ]
    lines += [
        "",
        "Accuracy is top-1 on the held-out test set; Δ is versus the teacher in percentage points.",
        "Compression (bytes) is teacher artifact bytes / stage artifact bytes (serialized file size on disk).",
        "Compression (packed) is teacher packed bytes / stage packed bytes: sparse relative indices,",
        "per-layer codebooks and Huffman coding (Deep Compression's storage); the packed form reloads",
        "to the same predictions.",
        "MACs are multiply-accumulates per sample in Linear and Conv layers with non-zero weights",
        "(metrics.json also has dense `macs`, top-5 accuracy and accuracy under Gaussian input noise).",
        "Agreement is the share of test predictions equal to the teacher's.",
        "Latency and throughput are medians of wall-clock runs on this machine's CPU, on a fixed number",
        "of threads (evaluate.threads; the throughput batch is evaluate.throughput_batch); metrics.json",
        "also has peak inference memory per stage.",
        "",
    ]
    return "\n".join(lines)


_DEPLOYMENT_COLUMNS = [
    ("latency_ms", "latency (ms)", "{:.3f}"),
    ("throughput_sps", "throughput (samples/s)", "{:,.0f}"),
    ("speedup", "speed-up vs teacher", "{:.2f}x"),
    ("val_agreement", "agreement (val)", "{:.2%}"),
    ("test_agreement", "agreement (test)", "{:.2%}"),
    ("test_accuracy", "test accuracy", "{:.4f}"),
]


def _deployment_markdown(deployment: dict[str, Any]) -> str:
    """Which runtime serves at which batch size, and every candidate measured to choose it."""
    chosen = sorted(deployment.get("chosen", {}).items(), key=lambda item: int(item[0]))
    serving = ", ".join(f"`{runtime}` at batch {batch}" for batch, runtime in chosen) or "no runtime"
    split, threshold = deployment.get("selection_split", "validation"), deployment.get("min_agreement")
    candidates = sorted(deployment.get("candidates", []), key=lambda row: int(row.get("batch", 0)))
    rows = [
        [
            f"`{row.get('runtime')}`",
            str(row.get("batch", "")),
            *[_cell(fmt, row.get(key)) for key, _, fmt in _DEPLOYMENT_COLUMNS],
            "yes" if row.get("eligible") else "no",
            "**yes**" if row.get("chosen") else "",
        ]
        for row in candidates
    ]
    numbers = ["batch", *[title for _, title, _ in _DEPLOYMENT_COLUMNS]]
    described = dict.fromkeys(
        f"`{r.get('runtime')}`: {r['description']}" for r in candidates if r.get("description")
    )
    lines = [
        "",
        "## Deployment runtime",
        "",
        f"Serving: {serving}. Each was chosen on the {split} split among the runtimes whose predictions "
        f"agree with {deployment.get('reference', 'the final model')} on at least "
        f"{_cell('{:.2%}', threshold) or '?'} of it (eligible); the test split is reported here, not used to choose. "
        f"The deployed model's folder (catalog entry `deployed_model`) holds `{deployment.get('artifact')}` for "
        f"`{deployment.get('runtime')}`, the runtime of the serving batch ({deployment.get('serve_batch')}); "
        "`shrinkflow.core.deploy.load_deployed(folder)` runs it.",
        "",
        _table(rows, ["runtime", *numbers, "eligible", "chosen"], right=numbers),
        "",
        f"Timed on {deployment.get('threads', '?')} thread(s); speed-up is against the fp32 teacher in eager "
        "PyTorch at the same batch, measured side by side.",
    ]
    if described:
        lines += ["", "Runtimes: " + "; ".join(described) + "."]
    return "\n".join([*lines, ""])


def accuracy_size_figure(document: dict[str, Any]) -> Any:
    """Accuracy against packed and artifact bytes for every evaluated stage, Pareto front marked.

    A panel per size that differs between stages (equal artifact bytes get none; the packed panel
    stays when neither differs); one legend names each stage's marker with its method.
    """
    plt = _pyplot()
    from shrinkflow.compare import draw_pareto, pareto_front, pareto_legend
    from shrinkflow.plotting import stage_styles

    done = {stage: row for stage, row in document.items() if row.get("status") == "done"}
    metrics = [m for m in ("packed_bytes", "artifact_bytes") if _varies(done, m)] or ["packed_bytes"]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(2.4 + 4.3 * len(metrics), 4.2), layout="constrained", squeeze=False
    )
    styles = stage_styles(list(done))
    for ax, metric in zip(axes[0], metrics, strict=True):
        points = pd.DataFrame(
            [
                {"stage": s, "size": float(r[metric]), "accuracy": float(r["accuracy"])}
                for s, r in done.items()
            ],
            columns=["stage", "size", "accuracy"],
        )
        points["pareto"] = pareto_front(points["size"].tolist(), points["accuracy"].tolist())
        draw_pareto(ax, points, metric, styles)
    pareto_legend(fig, styles, {s: f"{s} ({r['method']})" for s, r in done.items()})
    fig.suptitle("accuracy against size per stage")
    plt.close(fig)  # the dataset saves it; keep pyplot's registry empty
    return fig


def _varies(rows: dict[str, dict[str, Any]], key: str) -> bool:
    """Whether the stages that have ``key`` hold more than one value of it."""
    return len({row[key] for row in rows.values() if row.get(key) is not None}) > 1


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_figure(document: dict[str, Any]) -> Any:
    """Batch-1 latency per stage (median bar, p95 whisker) beside large-batch throughput (a panel
    only where the stages measured it)."""
    plt = _pyplot()
    done = {s: r for s, r in document.items() if r.get("status") in ("done", "exported")}
    throughput = _throughput_key(list(done.values()))
    fig, axes = plt.subplots(
        1, 2 if throughput else 1, figsize=(11 if throughput else 6, 4.2), layout="constrained", squeeze=False
    )
    lat, stages = axes[0][0], list(done)
    p50 = [float(done[s]["latency_b1_p50_ms"]) for s in stages]
    p95 = [float(done[s].get("latency_b1_p95_ms", done[s]["latency_b1_p50_ms"])) for s in stages]
    lat.bar(stages, p50, yerr=[[0] * len(stages), [b - a for a, b in zip(p50, p95, strict=True)]], capsize=4)
    lat.set_ylabel("latency at batch 1 (ms): median, whisker to p95")
    if throughput:
        thr = axes[0][1]
        thr.bar(stages, [float(done[s].get(throughput, float("nan"))) for s in stages], color="tab:green")
        thr.set_ylabel(f"{throughput.replace('_sps', '')}: samples / s (median)")
    for ax in axes[0]:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle("speed per stage (this machine's CPU)")
    plt.close(fig)
    return fig


def sparsity_figure(document: dict[str, Any]) -> Any:
    """Fraction of zero weights per layer, one group of bars per layer, one bar per stage.

    Only layers with zero weights in some stage are drawn (a dense transformer would otherwise
    bury its few pruned layers among dozens of empty groups); their names are slanted, anchored
    at their group, and the figure widens with their number.
    """
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    done = {s: r.get("layer_sparsity") or {} for s, r in document.items() if r.get("status") == "done"}
    every = dict.fromkeys(name for per_layer in done.values() for name in per_layer)
    layers = [name for name in every if any(per_layer.get(name, 0.0) > 0 for per_layer in done.values())]
    group = max(0.45, 0.15 * len(done))  # inches per layer
    fig, ax = plt.subplots(figsize=(min(max(6.0, group * len(layers) + 3), 24), 4.6), layout="constrained")
    width = 0.8 / max(len(done), 1)
    for i, (stage, per_layer) in enumerate(done.items()):
        xs = [j - 0.4 + (i + 0.5) * width for j in range(len(layers))]
        ax.bar(xs, [per_layer.get(name, 0.0) for name in layers], width, label=stage)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", rotation_mode="anchor")
    top = max((v for per_layer in done.values() for v in per_layer.values()), default=0.0)
    ax.set_ylim(0, min(1.0, max(0.05, 1.1 * top)))  # 1% sparsity stays visible beside 0%
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("zero weights (share of the layer)")
    if layers:
        fig.legend(loc="outside right upper", fontsize=8)
    else:
        message = f"no zero weights in any of {len(every)} layers"
        ax.text(0.5, 0.5, message, ha="center", transform=ax.transAxes)
    hidden = len(every) - len(layers)
    fig.suptitle(
        "per-layer sparsity per stage" + (f" ({hidden} layers without zeros left out)" if hidden else "")
    )
    plt.close(fig)
    return fig
