"""Acceptance check for the distillers on MNIST: how much of the teacher/student accuracy gap KD closes.

A student with at most 1/10 of the teacher's parameters is trained twice with the same seed, epochs
and batches: from scratch (plain cross-entropy) and with a distiller (``soft_kd`` by default). The
figure of merit is ``fraction closed = (kd - scratch) / (teacher - scratch)`` on the 10,000 t10k
images; Hinton et al. (2015) report about 0.9 on MNIST for a large dropout-regularised student.

    .venv/bin/python benchmarks/distillation.py --seeds 0 1        # writes benchmarks/results/distillation.md

Data and split are those of ``conf/mnist`` (``val_fraction`` 0.0833, split seed 0). The teacher is
trained once (seed 0) and cached under ``--cache``. Runs on the CPU with ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.data import split_data
from shrinkflow.core.datasets import mnist
from shrinkflow.core.method import Context
from shrinkflow.core.models import ModelSpec, build_model
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything

ROOT = Path(__file__).resolve().parents[1]
# Hinton et al.'s MNIST setting, scaled to the 1/10 budget: a 784-1200-1200-10 dropout teacher trained on
# images jittered by up to 2 px, and a 784-256-128-10 student (0.098 of its parameters) whose plain-CE
# training overfits (100% train accuracy). Settings chosen in benchmarks/results/distillation.md.
TEACHER = '{"name": "mlp", "kwargs": {"hidden": [1200, 1200], "dropout": 0.5}}'
STUDENT = '{"name": "mlp", "kwargs": {"hidden": [256, 128]}}'


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Jitter(nn.Module):
    """Shift each training image by up to ``pixels`` in x and y (zero fill); identity in eval mode.

    Hinton et al. (2015) trained their MNIST teacher on images jittered by up to two pixels. Hand-written
    because torchvision is not a dependency; the draws come from torch's global RNG, so seeded runs repeat.
    """

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.pixels:
            return x
        j, (b, c, h, w) = self.pixels, x.shape
        dy, dx = torch.randint(0, 2 * j + 1, (2, b, 1, 1))
        rows = (torch.arange(h).view(1, h, 1) + dy).expand(b, h, w)
        cols = (torch.arange(w).view(1, 1, w) + dx).expand(b, h, w)
        padded = F.pad(x, (j, j, j, j))
        flat = padded.flatten(2).gather(
            2, (rows * (w + 2 * j) + cols).flatten(1).unsqueeze(1).expand(b, c, -1)
        )
        return flat.view(b, c, h, w)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=str(ROOT.parent / "shared/datasets/mnist"))
    p.add_argument("--teacher", default=TEACHER, help="model spec (JSON)")
    p.add_argument("--teacher-epochs", type=int, default=25)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--teacher-jitter", type=int, default=2, help="random shifts of up to N px (teacher only)")
    p.add_argument("--student", default=STUDENT, help="model spec (JSON)")
    p.add_argument("--epochs", type=int, default=30, help="student epochs (scratch and KD alike)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--method", default="soft_kd")
    p.add_argument("--options", default='{"temperature": 8.0, "alpha": 0.7}', help="method options (JSON)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="/tmp/shrinkflow-bench")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/distillation.md"))
    return p.parse_args()


def main() -> None:
    a = _args()
    torch.set_num_threads(a.threads)
    started = time.time()
    train, val, test = split_data(mnist(a.mnist), 0.0833, 0.2, 0)
    shape, classes = train.input_shape, train.num_classes
    teacher_spec, student_spec = ModelSpec(**json.loads(a.teacher)), ModelSpec(**json.loads(a.student))
    plugin = plugins.load(plugins.DISTILLERS, a.method)
    cfg = plugin.config(json.loads(a.options))

    seed_everything(0)
    teacher = build_model(teacher_spec, shape, classes)
    recipe = json.dumps(
        [teacher_spec.to_dict(), a.teacher_epochs, a.teacher_lr, a.teacher_jitter], sort_keys=True
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:10]
    cache = Path(a.cache) / f"teacher-{teacher_spec.name}-{a.teacher_epochs}ep-{key}.pt"
    if cache.exists():
        teacher.load_state_dict(torch.load(cache, weights_only=True))
    else:
        teacher_cfg = TrainConfig(epochs=a.teacher_epochs, batch_size=128, lr=a.teacher_lr)
        fit(nn.Sequential(_Jitter(a.teacher_jitter), teacher), train, teacher_cfg, label="teacher")
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(teacher.state_dict(), cache)
    teacher.eval()
    teacher_acc = evaluate(teacher, test)[0]
    student_cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr)

    rows = []
    for seed in a.seeds:
        seed_everything(seed)
        scratch = build_model(student_spec, shape, classes)
        fit(scratch, train, student_cfg, label=f"scratch seed {seed}")
        seed_everything(seed)  # same initialisation and batch order as the scratch student
        student = build_model(student_spec, shape, classes)
        ctx = Context(train, val, fit=partial(fit, train=train, cfg=student_cfg), teacher=teacher)
        plugin.apply(student, cfg, ctx)
        s_acc, k_acc = evaluate(scratch, test)[0], evaluate(student, test)[0]
        rows.append((seed, s_acc, k_acc, (k_acc - s_acc) / (teacher_acc - s_acc)))
        print(
            f"seed {seed}: teacher {teacher_acc:.4f} scratch {s_acc:.4f} kd {k_acc:.4f} closed {rows[-1][3]:.3f}"
        )

    n_t, n_s = _params(teacher), _params(build_model(student_spec, shape, classes))
    mean = [statistics.fmean(r[i] for r in rows) for i in (1, 2, 3)]
    lines = [
        "# Distillation on MNIST: fraction of the teacher/student gap closed",
        "",
        f"Teacher `{a.teacher}` ({n_t:,} parameters, {a.teacher_epochs} epochs, Adam lr {a.teacher_lr}, "
        f"cosine, batch 128, inputs jittered by up to {a.teacher_jitter} px, seed 0); student `{a.student}` "
        f"({n_s:,} parameters, {n_s / n_t:.3f} of the teacher's). Student training: {a.epochs} epochs, "
        f"batch {a.batch_size}, Adam lr {a.lr}, cosine; `{a.method}` options `{json.dumps(cfg.to_dict())}`. "
        "Test set: the 10,000 t10k images; train/val split as conf/mnist (val_fraction 0.0833, seed 0).",
        "",
        "| seed | teacher acc | scratch acc | KD acc | fraction closed |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {s} | {teacher_acc:.4f} | {sa:.4f} | {ka:.4f} | {fc:.3f} |" for s, sa, ka, fc in rows],
        f"| mean | {teacher_acc:.4f} | {mean[0]:.4f} | {mean[1]:.4f} | {mean[2]:.3f} |",
        "",
        f"Fraction of the mean gap closed: {(mean[1] - mean[0]) / (teacher_acc - mean[0]):.3f} "
        f"(acceptance: >= 0.6). Wall time {time.time() - started:.0f} s on {a.threads} CPU thread(s).",
        "",
        f"Command: `.venv/bin/python benchmarks/distillation.py --teacher '{a.teacher}' "
        f"--teacher-epochs {a.teacher_epochs} --teacher-lr {a.teacher_lr} --teacher-jitter {a.teacher_jitter} "
        f"--student '{a.student}' --method {a.method} --options '{a.options}' --epochs {a.epochs} "
        f"--lr {a.lr} --batch-size {a.batch_size} --seeds {' '.join(map(str, a.seeds))}`",
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
