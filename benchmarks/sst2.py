"""A transformer text classifier on SST-2 through shrinkflow's stages: head/FFN pruning, layer
dropping, distillation into 2 layers over 2 seeds, dynamic int8, ONNX Runtime.

Acceptance points 2-5 of issue 18. On GLUE's SST-2 files (train.tsv trains and trains the
WordPiece tokenizer; dev.tsv is the validation split every progress line and choice reads;
test.tsv, the treebank's labelled binary test split, is evaluated once, at the end, for the table):

1. teacher: the 4-layer ``transformer_encoder`` of ``conf/sst2`` (d 128, 4 heads, FFN 256);
2. pruned: ``heads`` (half the heads and half the FFN neurons, Michel et al. gradients) + fine-tune;
3. dropped: ``layer_drop`` (the top 2 of 4 layers) + fine-tune: the depth baseline;
4. for seeds 0 and 1, a 2-layer student of the teacher's width trained three ways with the same
   epochs: from scratch (labels), ``soft_kd`` (logits) and ``hidden_kd`` (TinyBERT hidden states +
   MiniLMv2 relations + logits). The gap closed is ``(distilled - scratch) / (teacher - scratch)``;
5. int8: ``dynamic_int8`` of the seed-0 ``hidden_kd`` student; its ONNX export (``export_artifact``:
   token ids in, dynamic batch and sequence axes, int8 QDQ calibrated by ONNX Runtime) with the
   share of test sentences on which ONNX Runtime predicts what PyTorch predicts;
6. speed at fixed lengths of 32 and 128 tokens, batch 1 and batch 64, in interleaved rounds
   (``interleaved_seconds``), each ratio to the teacher's fp32 eager in the same round, medians.

Every recipe value is fixed below (``RECIPE``) before the run, the teacher's being the ones
``conf/sst2`` uses. Training runs on ``--train-threads`` threads, timing on ``--threads``.

    python benchmarks/sst2.py [--sst2 DIR] [--threads 1] [--rounds 5] [--quick] [--out benchmarks/results]

``--quick`` (the test): small subsets, one epoch per phase, few timing runs; its figures say nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (see cnn.py)

import torch  # after the OpenMP setting
from cnn import commit  # benchmarks/cnn.py
from machine import cpu_model  # benchmarks/machine.py
from torch import nn

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches, split_data
from shrinkflow.core.export import ExportConfig, OnnxModel, export_artifact
from shrinkflow.core.measure import at_length, count_macs, count_parameters, interleaved_seconds
from shrinkflow.core.models import ModelChoice
from shrinkflow.core.text import text_tsv
from shrinkflow.core.textmodels import encoder_blocks
from shrinkflow.core.training import TrainConfig, evaluate, node_seed, seed_everything
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage, TeacherStage, distill, run_method
from shrinkflow.stages import train_or_load_teacher as train_teacher

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
TOKENIZER = {
    "kind": "wordpiece",
    "vocab_size": 8000,
    "min_frequency": 2,
    "lowercase": True,
    "max_length": 128,
}
ENCODER = {"vocab_size": 8000, "d_model": 128, "heads": 4, "ffn": 256, "dropout": 0.2, "pooling": "cls"}


def _adamw(epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=128, lr=lr, weight_decay=0.05, optimizer="adamw", lr_schedule="cosine"
    )


RECIPE: dict[str, Any] = {
    "teacher": _adamw(3, 5e-4),
    "heads": {"head_ratio": 0.5, "ffn_ratio": 0.5, "importance": "taylor"},
    "finetune": _adamw(2, 3e-4),
    "layer_drop": {"keep": 2, "strategy": "top"},
    "student": _adamw(3, 5e-4),
    "soft_kd": {"temperature": 2.0, "alpha": 0.7},
    "hidden_kd": {"hidden": 1.0, "attention": 1.0, "relation_heads": 4, "temperature": 2.0, "alpha": 0.7},
}
SEEDS = (0, 1)
LENGTHS = (32, 128)
BATCH = 64
log = logging.getLogger("sst2")


def encoder(layers: int) -> ModelChoice:
    return ModelChoice("transformer_encoder", {"transformer_encoder": {**ENCODER, "layers": layers}})


def encoder_params(model: nn.Module) -> int:
    """Weights and biases of the transformer layers (embeddings, final norm and classifier
    excluded), int8 ones counted by their dequantized values."""
    return sum(count_parameters(b.layer)[0] for b in encoder_blocks(model))


class Bench:
    def __init__(self, train: Split, val: Split, test: Split, recipe: dict[str, Any]) -> None:
        self.train, self.val, self.test, self.recipe = train, val, test, recipe
        self.started = time.perf_counter()
        self.models: dict[str, ModelArtifact] = {}
        self.phases: dict[str, dict[str, Any]] = {}

    def done(self, name: str, model: ModelArtifact, since: float) -> None:
        val = evaluate(model.model, self.val)[0]
        self.models[name] = model
        self.phases[name] = {"seconds": time.perf_counter() - since, "val_accuracy": val}
        log.info("[%4.0f s] %s: dev accuracy %.4f", time.perf_counter() - self.started, name, val)

    def stage(self, name: str, make: Any, key: str | None = None) -> ModelArtifact:
        """``make()`` seeded by ``key`` (default ``name``): students of one seed share it, hence
        their initial weights and batch order."""
        t = time.perf_counter()
        seed_everything(node_seed(SEED, key or name))
        model = make()
        self.done(name, model, t)
        return model

    def run(self) -> None:
        r, train, val = self.recipe, self.train, self.val
        teacher = self.stage(
            "teacher",
            lambda: train_teacher(train, val, None, TeacherStage(model=encoder(4), train=r["teacher"]))[0],
        )
        for name, method in (("pruned (heads + FFN)", "heads"), ("dropped (top 2 layers)", "layer_drop")):
            stage = PruneStage(method=method, options={method: r[method]}, finetune=r["finetune"])
            self.stage(name, lambda s=stage: run_method(s, teacher, train, val, train_cfg=r["finetune"])[0])
        for seed in SEEDS:
            key = f"student s{seed}"
            student = TeacherStage(model=encoder(2), train=r["student"])
            self.stage(
                f"2-layer scratch s{seed}", lambda s=student: train_teacher(train, val, None, s)[0], key
            )
            for method in ("soft_kd", "hidden_kd"):
                stage = DistillStage(
                    method=method, options={method: r[method]}, student=encoder(2), train=r["student"]
                )
                self.stage(
                    f"2-layer {method} s{seed}",
                    lambda s=stage: distill(teacher, teacher, train, val, s)[0],
                    key,
                )
        source = self.models["2-layer hidden_kd s0"]
        quantize = QuantizeStage(method="dynamic_int8", options={"dynamic_int8": {}})
        self.stage("2-layer hidden_kd s0 int8", lambda: run_method(quantize, source, train, val)[0])


def rows(bench: Bench, threads: int, rounds: int, runs: int) -> list[dict[str, Any]]:
    """One row per model: test accuracy, sizes, MACs, and speed at each length; ONNX rows added."""
    test, found = bench.test.for_eval(), {}
    int8 = bench.models["2-layer hidden_kd s0 int8"]
    calibration = list(calibration_batches(bench.train, 8, 128))
    exports = {
        "ORT fp32 (2-layer hidden_kd s0)": export_artifact(
            bench.models["2-layer hidden_kd s0"], test.head(2), calibration, ExportConfig(format="float")
        ),
        "ORT int8 (2-layer hidden_kd s0 int8)": export_artifact(
            int8, test.head(2), calibration, ExportConfig()
        ),
    }
    head = test.head(BATCH)
    for name, art in bench.models.items():
        found[name] = {"runner": art.model.eval(), "runtime": "PyTorch", "model": art.model}
    for name, exported in exports.items():
        found[name] = {"runner": OnnxModel(exported.data, threads=threads), "runtime": "ONNX Runtime"}
        found[name]["onnx_bytes"] = len(exported.data)
    with torch.inference_mode():
        for v in found.values():
            runner = v["runner"]
            logits = torch.cat([runner(xb) for xb, _ in _batches(test)])
            v["predicted"] = logits.argmax(1)
            v["accuracy"] = float((v["predicted"] == test.y).float().mean())
    for name in exports:
        source = found["2-layer hidden_kd s0" if "fp32" in name else "2-layer hidden_kd s0 int8"]
        found[name]["agreement"] = float((found[name]["predicted"] == source["predicted"]).float().mean())
    timed = {}
    for length in LENGTHS:
        x = at_length(head, length)
        inputs = {1: x[:1].contiguous(), BATCH: x.contiguous()}
        timed[length] = interleaved_seconds(
            {n: v["runner"] for n, v in found.items()},
            inputs,
            rounds,
            {1: runs, BATCH: max(2, runs // 10)},
            3,
        )
    base = "teacher"
    out = []
    for name, v in found.items():
        row: dict[str, Any] = {"variant": name, "runtime": v["runtime"], "test_accuracy": v["accuracy"]}
        if "model" in v:
            model = v["model"]
            row.update(params=count_parameters(model)[0], encoder_params=encoder_params(model))
            row.update({f"macs_len{n}": count_macs(model, at_length(head[:1], n))[0] for n in LENGTHS})
            row["dev_accuracy"] = bench.phases[name]["val_accuracy"]
        else:
            row.update(onnx_bytes=v["onnx_bytes"], agreement=v["agreement"])
        for n in LENGTHS:
            mine, ref = timed[n][name], timed[n][base]
            row[f"latency_b1_len{n}_ms"] = 1e3 * statistics.median(mine[1])
            row[f"b1_len{n}_speedup"] = statistics.median(b / a for a, b in zip(mine[1], ref[1], strict=True))
            row[f"throughput_b{BATCH}_len{n}_sps"] = BATCH / statistics.median(mine[BATCH])
            row[f"b{BATCH}_len{n}_speedup"] = statistics.median(
                b / a for a, b in zip(mine[BATCH], ref[BATCH], strict=True)
            )
        out.append(row)
    return out


def _batches(test: Split) -> Any:
    from shrinkflow.core.training import reader

    return reader(test, 256)


def targets(table: list[dict[str, Any]], minutes: float | None) -> list[dict[str, Any]]:
    """Issue 18, points 2-4."""
    r = {row["variant"]: row for row in table}
    teacher, pruned = r["teacher"], r["pruned (heads + FFN)"]
    removed = 1 - pruned["encoder_params"] / teacher["encoder_params"]
    drop = 100 * (pruned["test_accuracy"] - teacher["test_accuracy"])

    def closure(split: str, seed: int) -> tuple[float, str]:
        """Share of the scratch -> teacher gap closed by hidden_kd on ``split`` (dev or test)."""
        scratch = r[f"2-layer scratch s{seed}"][f"{split}_accuracy"]
        kd = r[f"2-layer hidden_kd s{seed}"][f"{split}_accuracy"]
        gap = teacher[f"{split}_accuracy"] - scratch
        text = f"{split} seed {seed}: scratch {scratch:.4f}, hidden_kd {kd:.4f}, teacher {teacher[f'{split}_accuracy']:.4f}"
        if gap <= 0:  # the student from scratch is already as good: there is nothing to close
            return float("nan"), f"{text} (no gap: scratch >= teacher)"
        return (kd - scratch) / gap, f"{text} ({(kd - scratch) / gap:.0%} of {100 * gap:.2f} pts)"

    closed = [closure(split, seed) for split in ("test", "dev") for seed in SEEDS]
    int8, fp32 = r["2-layer hidden_kd s0 int8"], r["2-layer hidden_kd s0"]
    ort = r["ORT int8 (2-layer hidden_kd s0 int8)"]
    speed = ort["b1_len32_speedup"]
    eager_student = fp32["latency_b1_len32_ms"] / ort["latency_b1_len32_ms"]
    found = [
        ("heads+FFN pruning removes >= 40% of encoder parameters", removed >= 0.4, f"{removed:.1%}"),
        ("pruned within 1.5 pts of the teacher", drop >= -1.5, f"{drop:+.2f} pts"),
        (
            "hidden_kd closes >= 50% of the scratch-teacher test gap, each seed",
            all(c >= 0.5 for c, _ in closed[: len(SEEDS)]),
            "; ".join(text for _, text in closed),
        ),
        (
            "int8 within 0.5 pts of its input model",
            100 * (int8["test_accuracy"] - fp32["test_accuracy"]) >= -0.5,
            f"{100 * (int8['test_accuracy'] - fp32['test_accuracy']):+.2f} pts",
        ),
        ("ONNX int8 agrees >= 99.5%", ort["agreement"] >= 0.995, f"{ort['agreement']:.2%}"),
        (
            ">= 2x faster than fp32 eager (teacher) at b1, 32 tokens",
            speed >= 2,
            f"{speed:.2f}x (over the student's fp32 eager: {eager_student:.2f}x)",
        ),
    ]
    if minutes is not None:
        found.append(("wall time of this benchmark", True, f"{minutes:.1f} min"))
    return [{"target": t, "met": bool(met), "value": value} for t, met, value in found]


def markdown(table: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        "# A transformer on SST-2: heads/FFN pruning, layer dropping, distillation, int8, ONNX Runtime",
        "",
        f"Measured {header['date']} on {header['cpu']}; Python {header['python']}, torch {header['torch']}, "
        f"tokenizers {header['tokenizers']}, onnxruntime {header['onnxruntime']}, onnx {header['onnx']}, "
        f"shrinkflow {header['shrinkflow']} ({header['commit']}). Wall time {header['seconds'] / 60:.1f} min. "
        f"Command: `{header['command']}`.",
        "",
        f"Data: SST-2 (GLUE), {header['train']:,} training sentences, dev {header['val']:,} (every choice and "
        f"progress line), test {header['test']:,} (the labelled binary treebank test split, read once for this "
        "table). WordPiece 8k trained on train.tsv, max 128 tokens. Recipes (fixed before the run, see RECIPE "
        "and the JSON): AdamW, cosine schedule, batch 128, weight decay 0.05; teacher 3 epochs at 5e-4; pruning "
        "fine-tunes 2 epochs at 3e-4; every 2-layer student 3 epochs at 5e-4. Training ran on "
        f"{header['train_threads']} threads, timing on {header['threads']}.",
        "",
        "Encoder parameters: the transformer layers (embeddings and classifier excluded; the embedding "
        "table is 8000 x 128 = 1.02M in every model). MACs per sentence at a fixed length, attention "
        "products included. Speed: batch 1 and batch 64 at exactly 32 and 128 real tokens; speed-ups are "
        "medians over interleaved rounds of the ratio to the teacher's fp32 eager in the same round.",
        "",
        "| model | runtime | dev | test | params | encoder params | MACs @32 | MACs @128 | agreement "
        "| b1 @32 (ms) | b1 @32 speed-up | b1 @128 (ms) | b64 @32 (sent/s) | b64 @128 (sent/s) | b64 @128 speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        cell = {
            k: format(r[k], f) if k in r else ""
            for k, f in (("dev_accuracy", ".4f"), ("params", ","), ("encoder_params", ","))
        }
        macs = [f"{r[f'macs_len{n}'] / 1e6:.1f}M" if f"macs_len{n}" in r else "" for n in LENGTHS]
        agree = f"{r['agreement']:.2%}" if "agreement" in r else ""
        lines.append(
            f"| {r['variant']} | {r['runtime']} | {cell['dev_accuracy']} | {r['test_accuracy']:.4f} "
            f"| {cell['params']} | {cell['encoder_params']} | {macs[0]} | {macs[1]} | {agree} "
            f"| {r['latency_b1_len32_ms']:.3f} | {r['b1_len32_speedup']:.2f}x | {r['latency_b1_len128_ms']:.3f} "
            f"| {r[f'throughput_b{BATCH}_len32_sps']:,.0f} | {r[f'throughput_b{BATCH}_len128_sps']:,.0f} "
            f"| {r[f'b{BATCH}_len128_speedup']:.2f}x |"
        )
    phases = "; ".join(f"{n} {p['seconds']:.0f} s" for n, p in header["phases"].items())
    lines += ["", f"Phases: {phases}.", "", "## Targets (issue 18)", ""]
    lines += [
        f"- {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['value']})" for t in header["targets"]
    ]
    return "\n".join(lines) + "\n"


def load(args: argparse.Namespace, folder: Path) -> tuple[Split, Split, Split]:
    raw = text_tsv(
        train=str(args.sst2 / "train.tsv"),
        val=str(args.sst2 / "dev.tsv"),
        test=str(args.sst2 / "test.tsv"),
        tokenizer=TOKENIZER,
        tokenizer_file=str(folder / "tokenizer.json"),
    )
    train, val, test = split_data(raw, 0.1, 0.1, seed=SEED)
    if args.quick:
        train, val, test = train.subset(1024), val.subset(256), test.subset(256)
    return train, val, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sst2", type=Path, default=ROOT.parent / "shared/datasets/sst2")
    parser.add_argument("--threads", type=int, default=1, help="threads for timing")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--b1-runs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="small subsets, one epoch, few timing runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument(
        "--render", action="store_true", help="rewrite sst2.md (and the targets) from sst2.json"
    )
    args = parser.parse_args(argv)
    if args.render:  # the measured figures as they are; only the text and the targets' wording change
        document = json.loads((args.out / "sst2.json").read_text())
        header, table = document["header"], document["table"]
        header["targets"] = targets(table, None if header["quick"] else header["seconds"] / 60)
        (args.out / "sst2.json").write_text(json.dumps(document, indent=2) + "\n")
        (args.out / "sst2.md").write_text(markdown(table, header))
        return 0
    recipe = dict(RECIPE)
    if args.quick:
        args.rounds, args.b1_runs = 2, 5
        recipe = {k: replace(v, epochs=1) if isinstance(v, TrainConfig) else v for k, v in recipe.items()}
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sst2").setLevel(logging.INFO)
    start = time.perf_counter()
    torch.set_num_threads(args.train_threads)
    with tempfile.TemporaryDirectory() as folder:
        train, val, test = load(args, Path(folder))
    bench = Bench(train, val, test, recipe)
    bench.run()
    torch.set_num_threads(args.threads)
    table = rows(bench, args.threads, args.rounds, args.b1_runs)
    seconds = time.perf_counter() - start
    header = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        **{k: version(k) for k in ("torch", "tokenizers", "onnxruntime", "onnx", "shrinkflow")},
        "commit": commit(),
        "command": " ".join(["python benchmarks/sst2.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "threads": args.threads,
        "train_threads": args.train_threads,
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "seconds": seconds,
        "phases": bench.phases,
        "recipe": {k: v.to_dict() if isinstance(v, TrainConfig) else v for k, v in recipe.items()},
    }
    header["targets"] = targets(table, None if args.quick else seconds / 60)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sst2.json").write_text(json.dumps({"header": header, "table": table}, indent=2) + "\n")
    (args.out / "sst2.md").write_text(markdown(table, header))
    print(markdown(table, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
