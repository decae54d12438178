"""ResNet-20 and MobileNetV2 on MNIST through shrinkflow's stages, down to int8 in ONNX Runtime.

Acceptance point 5 of issue 15. For each model, on the real MNIST IDX files (a 5,000-image
validation split carved out of the 60,000 training images with ``split_data``; the 10,000 test
images are evaluated once, at the end, for the table):

1. teacher: fp32, trained by the teacher stage (``train_or_load_teacher``);
2. pruned: ``channel`` pruning (Torch-Pruning) with its own cross-entropy fine-tuning
   (``PruneStage`` + ``run_method``), then ``soft_kd`` from the teacher on the pruned student
   (``DistillStage`` + ``distill``);
3. int8: ``static_int8`` (default backend ``pt2e``: torch.export + torchao PT2E) of the pruned model;
4. ONNX: ``export_artifact`` of every model (the int8 one keeps its own qparams), with the share of
   test images on which ONNX Runtime predicts the same class as the PyTorch model it came from;
5. speed: batch-1 latency and batch-256 throughput of six variants (fp32 eager teacher, pruned fp32
   eager, pruned int8 PT2E eager, ONNX Runtime fp32 teacher / pruned, ONNX Runtime int8), timed in
   interleaved rounds as ``peers.py`` does; each ratio is to fp32 eager (teacher) in the same round
   and the table gives the median over rounds.

Every recipe value (epochs, learning rates, pruning ratio) is fixed in ``RECIPES`` below, chosen
before the run; progress lines print validation accuracy only. Training runs on ``--train-threads``
threads, timing on ``--threads``.

    python benchmarks/cnn.py [--mnist DIR] [--models resnet20 mobilenet_v2] [--threads 1] [--rounds 5]
                             [--quick] [--out benchmarks/results]

``--quick`` (the test): 1,024 training / 512 validation / 1,000 test images, one epoch per phase,
two timing rounds of a few runs. Its figures say nothing; it checks the script end to end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on 2 cores shared with another process, spinning
# threads of a 2-thread training step made MobileNetV2 steps 10-25x slower (0.5 s -> 6-8 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # after the OpenMP setting, which is read when the runtime starts
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)
from timing import time_rounds, timing_row  # benchmarks/timing.py
from torch import nn

from shrinkflow.core import artifact as artifacts
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches, split_data
from shrinkflow.core.datasets import mnist
from shrinkflow.core.export import ExportConfig, OnnxModel, export_artifact
from shrinkflow.core.measure import (
    count_macs,
    count_parameters,
)
from shrinkflow.core.models import ModelChoice
from shrinkflow.core.training import TrainConfig, evaluate, node_seed, predict, seed_everything
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage, TeacherStage, distill, run_method
from shrinkflow.stages import train_or_load_teacher as train_teacher

ROOT = Path(__file__).resolve().parents[1]
VAL_IMAGES = 5000
SEED = 0


def _sgd(epochs: int, lr: float, weight_decay: float) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=128, lr=lr, weight_decay=weight_decay, optimizer="sgd", lr_schedule="cosine"
    )


@dataclass(frozen=True)
class Recipe:
    """What each phase does to one model (SGD with momentum 0.9 and a cosine schedule throughout)."""

    title: str
    model: ModelChoice
    teacher: TrainConfig
    ratio: float  # channel pruning: share of each layer's output channels removed
    finetune: TrainConfig  # the pruner's own fine-tuning (cross-entropy)
    distill: TrainConfig  # soft_kd from the teacher
    temperature: float = 4.0
    alpha: float = 0.7


RECIPES = {
    "resnet20": Recipe(
        "ResNet-20",
        ModelChoice("resnet20"),
        teacher=_sgd(5, 0.1, 5e-4),
        ratio=0.4,
        finetune=_sgd(1, 0.02, 5e-4),
        distill=_sgd(2, 0.01, 5e-4),
    ),
    "mobilenet_v2": Recipe(
        "MobileNetV2 (width_mult 0.35)",
        ModelChoice("mobilenet_v2", {"mobilenet_v2": {"width_mult": 0.35}}),
        teacher=_sgd(2, 0.1, 1e-4),
        ratio=0.4,
        finetune=_sgd(1, 0.02, 1e-4),
        distill=_sgd(1, 0.01, 1e-4),
    ),
}
TEACHER, PRUNED, INT8 = "fp32 eager (teacher)", "pruned fp32 eager", "pruned int8 PT2E eager"
ORT_TEACHER, ORT_PRUNED, ORT_INT8 = "ORT fp32 (teacher)", "ORT fp32 (pruned)", "ORT int8 (pruned, our export)"
VARIANTS = (TEACHER, PRUNED, INT8, ORT_TEACHER, ORT_PRUNED, ORT_INT8)
#: ONNX variant -> the PyTorch variant it was exported from
EXPORTED_FROM = {ORT_TEACHER: TEACHER, ORT_PRUNED: PRUNED, ORT_INT8: INT8}

log = logging.getLogger("cnn")


def progress(key: str, started: float, text: str) -> None:
    log.info("[%s] %4.0f s  %s", key, time.perf_counter() - started, text)


def compress(
    key: str, recipe: Recipe, train: Split, val: Split, started: float
) -> tuple[dict[str, ModelArtifact], dict[str, Any]]:
    """teacher -> channel pruning + fine-tuning -> soft KD -> static int8, through the stages."""
    phases: dict[str, Any] = {}

    def done(phase: str, model: ModelArtifact, since: float) -> None:
        phases[phase] = {
            "seconds": time.perf_counter() - since,
            "val_accuracy": evaluate(model.model, val)[0],
        }
        progress(key, started, f"{phase}: val accuracy {phases[phase]['val_accuracy']:.4f}")

    t = time.perf_counter()
    seed_everything(node_seed(SEED, f"{key}:teacher"))
    teacher, _ = train_teacher(train, val, None, TeacherStage(model=recipe.model, train=recipe.teacher))
    done("teacher", teacher, t)

    t = time.perf_counter()
    seed_everything(node_seed(SEED, f"{key}:prune"))
    prune = PruneStage(
        method="channel", options={"channel": {"ratio": recipe.ratio}}, finetune=recipe.finetune
    )
    pruned, _ = run_method(prune, teacher, train, val, train_cfg=recipe.finetune)
    done("prune + fine-tune", pruned, t)

    t = time.perf_counter()
    seed_everything(node_seed(SEED, f"{key}:distill"))
    kd = {"temperature": recipe.temperature, "alpha": recipe.alpha}
    stage = DistillStage(method="soft_kd", options={"soft_kd": kd}, student="pruned", train=recipe.distill)
    distilled, _ = distill(teacher, pruned, train, val, stage)
    done("soft KD", distilled, t)

    t = time.perf_counter()
    seed_everything(node_seed(SEED, f"{key}:quantize"))
    quantize = QuantizeStage(method="static_int8", options={"static_int8": {}})
    int8, _ = run_method(quantize, distilled, train, val, teacher=teacher)
    done("static int8", int8, t)
    return {TEACHER: teacher, PRUNED: distilled, INT8: int8}, phases


def variants(models: dict[str, ModelArtifact], train: Split, test: Split, threads: int) -> dict[str, dict]:
    """name -> {runner, runtime, and the figures that do not depend on timing}."""
    calibration = list(calibration_batches(train, 8, 128))
    one = test.head(1)
    out: dict[str, dict[str, Any]] = {}
    for name, art in models.items():
        macs = count_macs(art.model, one)[0]
        out[name] = {
            "runner": art.model.eval(),
            "runtime": "PyTorch",
            "macs": macs,
            "params": count_parameters(art.model)[0],
            "artifact_bytes": len(artifacts.to_bytes(art)),
        }
    for name, source in EXPORTED_FROM.items():
        exported = export_artifact(models[source], test.head(2), calibration, ExportConfig())
        out[name] = {
            "runner": OnnxModel(exported.data, threads=threads),
            "runtime": "ONNX Runtime",
            "macs": out[source]["macs"],
            "params": out[source]["params"],
            "artifact_bytes": len(exported.data),
            "onnx_format": exported.format,
            "qparams": exported.qparams,
        }
    return out


def score(found: dict[str, dict], test: Split) -> None:
    """Test accuracy of every variant, and each export's agreement with its PyTorch model."""
    x = test.x  # the test images, read once for every variant
    with torch.inference_mode():
        for v in found.values():
            runner = v["runner"]
            logits = predict(runner, x, 1000) if isinstance(runner, nn.Module) else runner.predict(x)
            v["predicted"] = logits.argmax(1)
            v["accuracy"] = int((v["predicted"] == test.y).sum()) / len(test)
    for name, source in EXPORTED_FROM.items():
        same = found[name]["predicted"] == found[source]["predicted"]
        found[name]["agreement"] = float(same.float().mean())
        found[name]["agrees_with"] = source


def summarize(found: dict[str, dict]) -> list[dict[str, Any]]:
    base = found[TEACHER]
    rows = []
    for name, v in found.items():
        rows.append(
            {
                "variant": name,
                "runtime": v["runtime"],
                "accuracy": v["accuracy"],
                "accuracy_delta_pp": 100 * (v["accuracy"] - base["accuracy"]),
                "macs": v["macs"],
                "macs_ratio": base["macs"] / v["macs"],
                "params": v["params"],
                "artifact_bytes": v["artifact_bytes"],
                "agreement": v.get("agreement"),
                "agrees_with": v.get("agrees_with"),
                **timing_row(v, base),
                **{k: v[k] for k in ("onnx_format", "qparams") if k in v},
            }
        )
    return rows


def run_model(key: str, data: tuple[Split, Split, Split], args: argparse.Namespace) -> dict[str, Any]:
    recipe = RECIPES[key]
    if args.quick:
        one = TrainConfig(epochs=1, batch_size=128)
        recipe = replace(recipe, teacher=replace(recipe.teacher, epochs=1), finetune=one, distill=one)
    train, val, test = data
    started = time.perf_counter()
    torch.set_num_threads(args.train_threads)
    models, phases = compress(key, recipe, train, val, started)
    tables: dict[int, list[dict[str, Any]]] = {}
    for n in args.threads:
        torch.set_num_threads(n)
        t = time.perf_counter()
        found = variants(models, train, test, n)
        score(found, test)
        time_rounds(found, test.head(256), args.rounds, args.b1_runs, args.b256_runs, warmup=3)
        tables[n] = summarize(found)
        phases[f"export, test and timing ({n} thread{'s' if n > 1 else ''})"] = {
            "seconds": time.perf_counter() - t
        }
        progress(key, started, f"exported, tested and timed on {n} thread(s)")
    return {
        "key": key,
        "model": recipe.title,
        "recipe": {
            "model": recipe.model.to_dict(),
            "teacher": recipe.teacher.to_dict(),
            "channel_ratio": recipe.ratio,
            "finetune": recipe.finetune.to_dict(),
            "soft_kd": {"temperature": recipe.temperature, "alpha": recipe.alpha, **recipe.distill.to_dict()},
            "static_int8": "plugin defaults (pt2e, per-channel weights, histogram, 8 x 128 calibration)",
        },
        "phases": phases,
        "seconds": time.perf_counter() - started,
        "tables": tables,
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15, point 5: ResNet-20's targets, and the wall time of the whole command."""
    found = []
    if result["key"] == "resnet20":
        rows = {r["variant"]: r for r in next(iter(result["tables"].values()))}
        teacher, pruned, int8, ort = rows[TEACHER], rows[PRUNED], rows[INT8], rows[ORT_INT8]
        int8_delta = 100 * (int8["accuracy"] - pruned["accuracy"])
        found += [
            ("teacher test accuracy >= 99.4%", teacher["accuracy"] >= 0.994, f"{teacher['accuracy']:.2%}"),
            ("pruned MACs cut >= 2.5x", pruned["macs_ratio"] >= 2.5, f"{pruned['macs_ratio']:.2f}x"),
            (
                "pruned within 0.3 pp of the teacher",
                pruned["accuracy_delta_pp"] >= -0.3,
                f"{pruned['accuracy_delta_pp']:+.2f} pp",
            ),
            ("int8 within 0.2 pp of the pruned model", int8_delta >= -0.2, f"{int8_delta:+.2f} pp"),
            (
                "ONNX int8 agrees with PyTorch int8 >= 99.9%",
                ort["agreement"] >= 0.999,
                f"{ort['agreement']:.2%}",
            ),
        ]
    return [{"target": t, "met": bool(met), "value": value} for t, met, value in found]


def findings(result: dict[str, Any], threads: str) -> list[str]:
    rows = {r["variant"]: r for r in result["tables"][threads]}
    pruned, ort_t, ort_p, ort_q = rows[PRUNED], rows[ORT_TEACHER], rows[ORT_PRUNED], rows[ORT_INT8]
    int8 = rows[INT8]

    def speed(r: dict[str, Any]) -> str:
        return f"{r['latency_b1_speedup']:.2f}x at b1, {r['throughput_b256_speedup']:.2f}x at b256"

    return [
        f"- pruning cut MACs {pruned['macs_ratio']:.2f}x ({pruned['accuracy_delta_pp']:+.2f} pp after fine-tuning "
        f"and KD); in eager PyTorch that bought {speed(pruned)}; in ONNX Runtime fp32 the pruned model's speed is "
        f"{ort_t['latency_b1_ms'] / ort_p['latency_b1_ms']:.2f}x the unpruned export's at b1, "
        f"{ort_p['throughput_b256_sps'] / ort_t['throughput_b256_sps']:.2f}x at b256.",
        f"- int8: ONNX Runtime (our export, {ort_q['qparams']} qparams) {speed(ort_q)} against fp32 eager; "
        f"over ONNX Runtime fp32 of the same pruned model "
        f"{ort_p['latency_b1_ms'] / ort_q['latency_b1_ms']:.2f}x at b1, "
        f"{ort_q['throughput_b256_sps'] / ort_p['throughput_b256_sps']:.2f}x at b256; it agrees with the PyTorch "
        f"int8 graph on {ort_q['agreement']:.2%} of test images. The PT2E graph in eager PyTorch "
        f"(reference dequantize -> float op -> quantize): {speed(int8)}.",
    ]


def markdown(results: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        "# ResNet-20 and MobileNetV2 on MNIST: pruned, distilled, int8, in ONNX Runtime",
        "",
        f"Measured {header['date']} on {header['cpu']}; Python {header['python']}, torch {header['torch']}, "
        f"torchao {header['torchao']}, onnxruntime {header['onnxruntime']}, onnx {header['onnx']}, "
        f"torch-pruning {header['torch_pruning']}, shrinkflow {header['shrinkflow']} ({header['commit']}). "
        f"Wall time {header['seconds'] / 60:.1f} min. Command: `{header['command']}`.",
        "",
        f"Data: MNIST, {header['train_images']:,} training / {header['val_images']:,} validation images "
        f"(`split_data`, seed {SEED}); accuracy is top-1 on the {header['test_images']:,} test images, "
        "evaluated once at the end. Recipes (fixed before the run; see `RECIPES` and the JSON): teacher, "
        "SGD (momentum 0.9) with a cosine schedule, batch 128; `channel` pruning (L1, per layer) with one "
        "epoch of its own fine-tuning, then `soft_kd` (T=4, alpha 0.7) from the teacher; `static_int8` "
        "with its defaults (PT2E, per-channel weights, histogram observer, 8 x 128 calibration images). "
        f"Training ran on {header['train_threads']} threads.",
        "",
        "MACs: dense multiply-accumulates of one 28x28 image (`count_macs`; an ONNX row repeats its "
        "source model's). Size: the shrinkflow artifact (`to_bytes`) for PyTorch rows, the ONNX file for "
        "ONNX Runtime rows. Agreement: share of test images on which an ONNX Runtime model predicts "
        "the class its PyTorch source predicts. Speed-ups: median over interleaved rounds of the ratio to "
        "fp32 eager (teacher) in the same round (> 1 is faster); the b256 range is the lowest and highest "
        "round.",
    ]
    for threads in results[0]["tables"]:
        lines += [
            "",
            f"## {threads} thread{'s' if int(threads) > 1 else ''}",
            "",
            "| model | variant | accuracy | Δ pp | MACs | MACs ratio | params | size (B) | agreement "
            "| latency b1 (ms) | b1 speed-up | throughput b256 (samples/s) | b256 speed-up (range) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for result in results:
            for r in result["tables"][threads]:
                low, high = r["throughput_b256_speedup_range"]
                agree = "" if r["agreement"] is None else f"{r['agreement']:.2%}"
                lines.append(
                    f"| {result['model']} | {r['variant']} | {r['accuracy']:.4f} | {r['accuracy_delta_pp']:+.2f} "
                    f"| {r['macs'] / 1e6:.2f}M | {r['macs_ratio']:.2f}x | {r['params']:,} | {r['artifact_bytes']:,} "
                    f"| {agree} | {r['latency_b1_ms']:.3f} | {r['latency_b1_speedup']:.2f}x "
                    f"| {r['throughput_b256_sps']:,.0f} | {r['throughput_b256_speedup']:.2f}x ({low:.2f}-{high:.2f}) |"
                )
    lines += ["", "## What the figures show", ""]
    for result in results:
        threads = next(iter(result["tables"]))
        lines += [f"{result['model']} ({threads} thread(s)):", "", *findings(result, threads), ""]
        phases = "; ".join(
            f"{name} {p['seconds']:.0f} s"
            + (f" (val {p['val_accuracy']:.4f})" if "val_accuracy" in p else "")
            for name, p in result["phases"].items()
        )
        lines += [f"- phases: {phases}.", ""]
    lines += ["## Targets (issue 15, point 5)", ""]
    for t in header["targets"]:
        lines.append(f"- {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['value']})")
    return "\n".join(lines) + "\n"


def load(args: argparse.Namespace) -> tuple[Split, Split, Split]:
    raw = mnist(str(args.mnist))
    # 5,000 of MNIST's 60,000 training images; a fifth of a smaller pool (the test's IDX files)
    train, val, test = split_data(raw, min(VAL_IMAGES / len(raw.data), 0.2), 0.2, seed=SEED)
    if args.quick:
        train, val, test = train.subset(1024), val.subset(512), test.subset(1000)
    return train, val, test


def commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "unknown commit"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared/datasets/mnist")
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="threads for timing")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--b1-runs", type=int, default=50)
    parser.add_argument("--b256-runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny subset, one epoch, few timing runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.b1_runs, args.b256_runs = (
            min(args.rounds, 2),
            min(args.b1_runs, 5),
            min(args.b256_runs, 2),
        )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("cnn", "shrinkflow"):
        logging.getLogger(name).setLevel(logging.INFO)
    start = time.perf_counter()
    data = load(args)
    results = [run_model(key, data, args) for key in args.models]
    header = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        **{
            k.replace("-", "_"): version(k)
            for k in ("torch", "torchao", "onnxruntime", "onnx", "torch-pruning", "shrinkflow")
        },
        "commit": commit(),
        "command": " ".join(["python benchmarks/cnn.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "train_threads": args.train_threads,
        "train_images": len(data[0]),
        "val_images": len(data[1]),
        "test_images": len(data[2]),
        "seconds": time.perf_counter() - start,
    }
    header["targets"] = [t for r in results for t in targets(r)]
    if not args.quick and set(args.models) == set(RECIPES):
        minutes = header["seconds"] / 60
        header["targets"].append(
            {
                "target": "wall time <= 30 min (both models)",
                "met": minutes <= 30,
                "value": f"{minutes:.1f} min",
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cnn.json").write_text(json.dumps({"header": header, "results": results}, indent=2) + "\n")
    (args.out / "cnn.md").write_text(markdown(results, header))
    print(markdown(results, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
