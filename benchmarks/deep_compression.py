"""Reproduce Deep Compression's MNIST table (Han et al., ICLR 2016, Tables 2-3) with shrinkflow.

For each model this runs the real pipeline, ``kedro run --env dc_<model>`` (train the fp32 baseline ->
AGP pruning to the paper's per-layer densities -> recovery distillation -> k-means weight sharing),
in a scratch copy of the project, then packs the final model (sparse relative indices + codebook
indices, Huffman-coded: ``shrinkflow.core.packing``), checks that the packed file reloads to the
same test predictions, and writes a table:

    python benchmarks/deep_compression.py [--models lenet300 lenet5] [--seeds 42] [--mnist DIR] [--out benchmarks/results]

Each seed is a whole run (``kedro run --params seed=N``: baseline and compressed model alike); with
several seeds the table has a row per seed, so run-to-run noise (about 0.1 point on MNIST) shows.

Paper figures: LeNet-300-100 1.64% -> 1.58% error at 40x (1070 KB -> 27 KB); LeNet-5 0.80% -> 0.74%
at 39x (1720 KB -> 44 KB). "fp32 bytes" below is 4 bytes per parameter, as the paper counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

from shrinkflow.core import artifact, packing
from shrinkflow.core.data import split_data
from shrinkflow.core.datasets import mnist
from shrinkflow.core.sparsity import prunable
from shrinkflow.core.training import predict

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "lenet300": ("dc_lenet300", "LeNet-300-100", 1.64, 1.58, 40),
    "lenet5": ("dc_lenet5", "LeNet-5", 0.80, 0.74, 39),
}


def run_pipeline(env: str, mnist_dir: Path, workdir: Path, seed: int) -> tuple[dict, float]:
    """``kedro run --env <env>`` in a scratch copy of the project; (metrics.json, wall seconds)."""
    for item in ("conf", "pyproject.toml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / item)
    (workdir / "src").mkdir()
    kedro = str(Path(sys.executable).with_name("kedro"))
    env_vars = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true", "COLUMNS": "200"}
    log = workdir / "kedro.log"
    start = time.perf_counter()
    with log.open("w") as out:  # streamed, so a long run can be followed with tail -f
        result = subprocess.run(
            [kedro, "run", "--env", env, "--params", f"mnist_dir={mnist_dir},seed={seed}"],
            cwd=workdir,
            env=env_vars,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"kedro run --env {env} failed:\n{log.read_text()[-3000:]}")
    return json.loads((workdir / "data/08_reporting/metrics.json").read_text()), seconds


def layer_rows(final: artifact.ModelArtifact, packed: bytes) -> list[dict]:
    rows, described = [], packing.describe(packed)
    for name, module in prunable(final.model):
        w = module.weight.detach()
        nonzero = int(torch.count_nonzero(w))
        enc = described[f"{name}.weight"]
        rows.append(
            {
                "layer": name,
                "weights": w.numel(),
                "density": nonzero / w.numel(),
                "codebook_bits": math.ceil(math.log2(enc["codebook"])) if enc["codebook"] else 32,
                "encoding": enc["encoding"],
                "index_bits": enc["index_bits"],
                "stored_bits_per_nonzero": 8 * enc["stored_bytes"] / max(1, nonzero),
            }
        )
    return rows


def measure(key: str, mnist_dir: Path, seed: int) -> dict:
    env, title, paper_base, paper_comp, paper_ratio = MODELS[key]
    with tempfile.TemporaryDirectory(prefix=f"shrinkflow-{key}-") as tmp:
        work = Path(tmp)
        metrics, seconds = run_pipeline(env, mnist_dir, work, seed)
        final = artifact.load(work / "data/06_models/quantized.pt")
    teacher, last = metrics["teacher"], metrics["quantized"]
    packed = packing.to_bytes(final)
    test = split_data(mnist(path=str(mnist_dir)), 0.0833, 0.2, seed=0)[2]
    same = torch.equal(predict(packing.from_bytes(packed).model, test.x), predict(final.model, test.x))
    fp32_bytes = 4 * teacher["params_total"]
    return {
        "model": title,
        "seed": seed,
        "baseline_error_pct": 100 * (1 - teacher["accuracy"]),
        "compressed_error_pct": 100 * (1 - last["accuracy"]),
        "fp32_bytes": fp32_bytes,
        "packed_bytes": len(packed),
        "ratio": fp32_bytes / len(packed),
        "packed_reload_identical": same,
        "stages": {
            s: {k: metrics[s].get(k) for k in ("accuracy", "sparsity", "packed_bytes")} for s in metrics
        },
        "layers": layer_rows(final, packed),
        "wall_seconds": seconds,
        "paper": {"baseline_error_pct": paper_base, "compressed_error_pct": paper_comp, "ratio": paper_ratio},
    }


def markdown(results: list[dict], header: dict) -> str:
    lines = [
        "# Deep Compression on MNIST, reproduced with shrinkflow",
        "",
        f"Measured {header['date']} on {header['cpu']} ({header['threads']} torch threads); "
        f"torch {header['torch']}, shrinkflow {header['shrinkflow']}; "
        f"{header['total_minutes']:.1f} minutes in all. Command: {header['command']}.",
        "",
        "| model | seed | baseline error | compressed error | Δ (pp) | fp32 bytes | packed bytes | ratio | paper (error, ratio) | reload identical | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["paper"]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['baseline_error_pct']:.2f}% | {r['compressed_error_pct']:.2f}% | "
            f"{r['compressed_error_pct'] - r['baseline_error_pct']:+.2f} | {r['fp32_bytes']:,} | "
            f"{r['packed_bytes']:,} | {r['ratio']:.1f}x | {p['baseline_error_pct']:.2f}% -> "
            f"{p['compressed_error_pct']:.2f}%, {p['ratio']}x | {r['packed_reload_identical']} | "
            f"{r['wall_seconds'] / 60:.1f} min |"
        )
    lines.append("")
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model]
        if len(runs) > 1:
            deltas = [r["compressed_error_pct"] - r["baseline_error_pct"] for r in runs]
            per_seed = ", ".join(f"{r['seed']}: {d:+.2f}" for r, d in zip(runs, deltas, strict=True))
            lines.append(
                f"{model} over {len(runs)} seeds: mean Δ {statistics.mean(deltas):+.3f} pp, median "
                f"{statistics.median(deltas):+.3f} pp (per seed {per_seed}); ratio "
                f"{min(r['ratio'] for r in runs):.1f}x-{max(r['ratio'] for r in runs):.1f}x. Binomial noise on "
                "10,000 test images at 2% error is about 0.14 pp (one sigma) per run."
            )
    for r in results:
        lines += [
            "",
            f"## {r['model']} (seed {r['seed']}): per layer",
            "",
            "| layer | weights | density | codebook bits | encoding | relative-index bits | stored bits / non-zero |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["layers"]:
            lines.append(
                f"| {row['layer']} | {row['weights']:,} | {row['density']:.1%} | {row['codebook_bits']} | "
                f"{row['encoding']} | {row['index_bits'] or '-'} | {row['stored_bits_per_nonzero']:.2f} |"
            )
    lines += [
        "",
        "Errors are top-1 on the 10,000 MNIST test images. fp32 bytes = 4 x parameters (the paper's",
        "count); packed bytes = the whole packed file (header, codebooks, Huffman tables, biases in fp32).",
        "Stored bits per non-zero include the relative index, the codebook index and filler entries.",
        "Wall time is the whole `kedro run` (data loading, baseline training, every stage and evaluation).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["lenet300", "lenet5"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="pipeline seeds (conf/base: 42)")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared/datasets/mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="train nothing: combine saved deep_compression.json files (e.g. one per model) into one table",
    )
    args = parser.parse_args(argv)
    if args.render:
        saved = [json.loads(path.read_text()) for path in args.render]
        header = {k: v for k, v in saved[0].items() if k != "results"}
        header["command"] = "; ".join(
            f"`{s['command'].strip('`')}` ({s['total_minutes']:.1f} min)" for s in saved
        )
        header["total_minutes"] = sum(s["total_minutes"] for s in saved)
        results = [r for s in saved for r in s["results"]]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "deep_compression.json").write_text(json.dumps({**header, "results": results}, indent=2))
        (args.out / "deep_compression.md").write_text(markdown(results, header))
        return 0
    header = {
        "date": dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "shrinkflow": version("shrinkflow"),
        "command": "`python benchmarks/deep_compression.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
    }
    start = time.perf_counter()
    results = [measure(key, args.mnist.resolve(), seed) for key in args.models for seed in args.seeds]
    header["total_minutes"] = (time.perf_counter() - start) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deep_compression.json").write_text(json.dumps({**header, "results": results}, indent=2))
    (args.out / "deep_compression.md").write_text(markdown(results, header))
    print(markdown(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
