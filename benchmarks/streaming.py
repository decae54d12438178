"""Streamed data: memory that does not grow with the data set, and what streaming costs per epoch.

1. Peak RSS of the whole DAG (`kedro run --env images`, the CIFAR-style configuration with its
   resize, pad-and-crop, flip and normalize steps) on a folder of 60,000 and one of 6,000 32x32
   RGB PNGs (MNIST's training digits padded to 32x32 and written as RGB), same model (LeNet-5) and
   configuration. Each run is a fresh process; its peak is the kernel's high-water mark
   (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper process that runs only it).
2. One LeNet-5 training epoch on MNIST's 60,000 training digits: in memory (the IDX files as one
   uint8 tensor, batches sliced) against streamed from disk: the IDX file memory-mapped
   (``mnist(memory_map=True)``: rows read from the file as batches index them), and the same digits
   as 28x28 PNG files decoded one at a time; in-process or by DataLoader workers. Epochs are
   interleaved, so machine noise hits every variant alike; medians are reported.

    python benchmarks/streaming.py --mnist ../shared/datasets/mnist --out benchmarks/results/streaming

Writes ``<out>.json`` and ``<out>.md``. The PNG folders are written once under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from shrinkflow.core.datasets import _mnist_part  # noqa: E402

#: the DAG the memory runs execute: LeNet-5, one epoch per training stage, quick timings
DAG = (
    "train_teacher.model.name=lenet5,train_teacher.train.epochs=1,train_teacher.train.optimizer=adam,"
    "train_teacher.train.lr=0.002,prune.finetune.epochs=0,distill.train.epochs=1,"
    "evaluate.latency_runs=20,evaluate.throughput_runs=5,gates.max_accuracy_drop=1.0"
)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, rgb: bool) -> Path:
    """One PNG per image under ``root/<label>/``; skipped when the folder is complete."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for label in np.unique(labels):
        (root / str(label)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if rgb:
            image = np.repeat(np.pad(image, 2)[..., None], 3, axis=2)
        Image.fromarray(image, "RGB" if rgb else "L").save(root / str(label) / f"{i:05d}.png")
    done.touch()
    return root


def peak_rss(folder: Path, project: Path, workers: int) -> dict[str, float]:
    """Peak RSS (MiB) and wall time of `kedro run --env images` on ``folder`` in a fresh process."""
    for item in ("conf", "pyproject.toml"):
        target = project / item
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, target)
    shutil.rmtree(project / "data", ignore_errors=True)
    (project / "src").mkdir(parents=True, exist_ok=True)  # the package is the installed one
    for layer in ("06_models", "08_reporting"):
        (project / "data" / layer).mkdir(parents=True)
    kedro = str(Path(sys.executable).with_name("kedro"))
    params = f"image_dir={folder},runtime.loader.num_workers={workers},{DAG}"
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter();"
        f"r = subprocess.run([{kedro!r}, 'run', '--env', 'images', '--params', {params!r}], capture_output=True, text=True);"
        "sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:]) if r.returncode else None;"
        "print(r.returncode, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], cwd=project, capture_output=True, text=True, check=True
    )
    code, seconds, kib = out.stdout.split()
    if code != "0":
        raise RuntimeError(f"kedro run on {folder} failed:\n{out.stderr}")
    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    return {
        "peak_rss_mib": int(kib) / 1024,
        "seconds": float(seconds),
        "teacher_accuracy": metrics["teacher"]["accuracy"],
        "test_samples": metrics["teacher"]["test_samples"],
    }


def epoch_times(mnist: Path, folder: Path, rounds: int, workers: list[int]) -> dict[str, list[float]]:
    import torch

    from shrinkflow.core.data import Split
    from shrinkflow.core.images import image_folder
    from shrinkflow.core.loader import LoaderConfig
    from shrinkflow.core.models import ModelSpec, build_model
    from shrinkflow.core.training import TrainConfig, fit, seed_everything

    memory = _mnist_part(mnist, "train")
    mapped = _mnist_part(mnist, "train", memory_map=True)
    files = image_folder(str(folder)).data
    variants = {"in memory (IDX tensor)": Split(memory, torch.arange(len(memory)))}
    for n in workers:
        name = f"streamed from disk (memory-mapped IDX), num_workers={n}"
        variants[name] = Split(mapped, torch.arange(len(mapped)), loader=LoaderConfig(num_workers=n))
    for n in workers:
        name = f"streamed PNG files decoded per image, num_workers={n}"
        variants[name] = Split(files, torch.arange(len(files)), loader=LoaderConfig(num_workers=n))
    cfg = TrainConfig(epochs=1, batch_size=128, lr=1e-3)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, split in variants.items():
            seed_everything(0)
            model = build_model(ModelSpec("lenet5"), (1, 28, 28), 10)
            start = time.perf_counter()
            fit(model, split, cfg, label=name)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared/datasets/mnist")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shrinkflow-streaming"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-epochs", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/streaming")
    args = parser.parse_args()
    os.environ.update(KEDRO_DISABLE_TELEMETRY="1", DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true",
                      DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false")  # fmt: skip
    train = _mnist_part(args.mnist, "train")
    images, labels = train.x[:, 0].numpy(), train.y.numpy()
    start = time.perf_counter()
    rgb60k = write_folder(args.work / "rgb60k", images, labels, rgb=True)
    rgb6k = write_folder(args.work / "rgb6k", images[:6000], labels[:6000], rgb=True)
    gray60k = write_folder(args.work / "gray60k", images, labels, rgb=False)
    print(f"folders ready in {time.perf_counter() - start:.0f} s")
    result: dict[str, object] = {"machine": {"cpus": os.cpu_count()}, "command": " ".join(sys.argv)}
    if not args.skip_rss:
        rss = {}
        for name, folder in (("6,000 PNGs", rgb6k), ("60,000 PNGs", rgb60k)):
            rss[name] = peak_rss(folder, args.work / "project", workers=0)
            print(name, rss[name])
        rss["ratio_60k_over_6k"] = rss["60,000 PNGs"]["peak_rss_mib"] / rss["6,000 PNGs"]["peak_rss_mib"]
        result["peak_rss"] = rss
    if not args.skip_epochs:
        times = epoch_times(args.mnist, gray60k, args.rounds, args.workers)
        base = statistics.median(times["in memory (IDX tensor)"])
        result["epoch_seconds"] = {
            name: {
                "runs": t,
                "median": statistics.median(t),
                "ratio_to_in_memory": statistics.median(t) / base,
            }
            for name, t in times.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


def render(result: dict) -> str:
    import pandas as pd

    lines = ["# Streamed data", "", f"`{result['command']}` ({result['machine']['cpus']} CPUs)", ""]
    if "peak_rss" in result:
        rss = result["peak_rss"]
        rows = [{"folder": k, **v} for k, v in rss.items() if isinstance(v, dict)]
        lines += ["## Peak RSS of `kedro run --env images` (LeNet-5, num_workers=0)", "",
                  pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"), "",
                  f"60,000 / 6,000: **{rss['ratio_60k_over_6k']:.3f}x**", ""]  # fmt: skip
    if "epoch_seconds" in result:
        rows = [{"variant": k, "median_s": v["median"], "x in-memory": v["ratio_to_in_memory"],
                 "runs_s": ", ".join(f"{t:.1f}" for t in v["runs"])} for k, v in result["epoch_seconds"].items()]  # fmt: skip
        lines += ["## One LeNet-5 epoch on MNIST's 60,000 training digits (batch 128, 2 torch threads)", "",
                  pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"), ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
