"""shrinkflow's compressed models beside the tools users would pick instead, in one process run.

On MNIST, for LeNet-300-100, LeNet-5 and the seed article's CNN, each trained here in fp32:

* ``fp32 eager``: the trained model in eager PyTorch (the reference every ratio is against);
* ``torch.ao dynamic int8``: ``torch.ao.quantization.quantize_dynamic`` applied directly;
* ``shrinkflow dynamic_int8 (PyTorch)``: our quantize stage's default plugin, run in PyTorch;
* ``shrinkflow static_int8 (PyTorch)``: our static int8 plugin with ``backend: fx`` (torch.ao FX,
  calibrated activations, eager int8 kernels);
* ``shrinkflow int8 (ONNX QDQ)``: our int8 path end to end, the quantize stage then the export
  stage run in ONNX Runtime. For LeNet-300-100 that is the default, ``static_int8`` exported with
  the PyTorch model's own qparams; for the CNNs it is ``dynamic_int8`` (Linear layers int8,
  convolutions float, recalibrated by ONNX Runtime), because int8 convolutions are slower than
  fp32 ones on CPUs without VNNI (see the ``ONNX Runtime int8`` rows). The table gives its
  agreement with the PyTorch int8 model it was exported from;
* ``ONNX Runtime fp32`` / ``ONNX Runtime int8``: the fp32 model exported to ONNX, and that export
  quantized by ONNX Runtime's own ``quantize_static`` (what a user of ORT alone would do);
* ``unstructured 50%`` / ``structured 50%``: magnitude pruning of half of the weights, and
  Torch-Pruning channel pruning of half of each layer's channels, both fine-tuned the same way
  (3 epochs); the structured model also exported and run in ONNX Runtime fp32, to compare with the
  unpruned ``ONNX Runtime fp32`` where per-call overhead does not hide the saved work;
* ``NNCF PTQ int8 (OpenVINO)`` / ``OpenVINO fp32``: the strongest CPU int8 anchor outside
  PyTorch, NNCF's post-training quantization (``nncf.quantize`` on the same calibration batches)
  run by OpenVINO, and the fp32 export run by OpenVINO, which separates the int8 gain from the
  runtime's (benchmarks/openvino_runner.py). Optional: ``pip install -c constraints.txt -e
  ".[openvino]"``; without it these rows are skipped and the script says so.

Every variant is timed in interleaved rounds (each round times every variant once: batch-1 latency,
median of ``--b1-runs`` calls; batch-256 throughput, median of ``--b256-runs`` calls), on a fixed
number of threads per table; the table gives the median over rounds of each variant's ratio to fp32
eager measured in the same round, so machine noise that hits a whole round cancels.

    python benchmarks/peers.py [--mnist DIR] [--threads 1 2] [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml
from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)
from openvino_runner import missing, openvino_variants  # benchmarks/openvino_runner.py
from timing import time_rounds, timing_row  # benchmarks/timing.py
from torch import nn

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches
from shrinkflow.core.datasets import mnist
from shrinkflow.core.deploy import deploy
from shrinkflow.core.export import ExportConfig, OnnxModel, export_artifact, quantize_int8, to_onnx
from shrinkflow.core.measure import (
    MeasureConfig,
    activation_peak_bytes,
    count_parameters,
    large_batch,
    model_bytes,
)
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, predict, seed_everything
from shrinkflow.stages import PruneStage, QuantizeStage, run_method

ROOT = Path(__file__).resolve().parents[1]
# key -> (title, model, training epochs, the quantizer of our int8 path)
MODELS = {
    "lenet300": ("LeNet-300-100", ModelSpec("lenet_300_100"), 10, "static_int8"),
    "lenet5": ("LeNet-5", ModelSpec("lenet5"), 6, "dynamic_int8"),
    "seed_cnn": ("seed CNN", ModelSpec("seed_cnn"), 5, "dynamic_int8"),
}
# key -> (label, prune method, its options, quantizer or None): the recipe whose final model the
# export stage deploys on the runtime it measures fastest (``shrinkflow.core.deploy``)
DEPLOYED = {
    "lenet300": (
        "AGP 92% + static_int8",
        "agp",
        {"sparsity": 0.92, "steps": 3, "epochs_per_step": 2},
        "static_int8",
    ),
    "lenet5": ("channel 50%", "channel", {"ratio": 0.5}, None),
    "seed_cnn": ("channel 50%", "channel", {"ratio": 0.5}, None),
}
FINETUNE = TrainConfig(epochs=3, lr=1e-3)

Runner = Callable[[torch.Tensor], Any]


def train_fp32(spec: ModelSpec, train: Split, val: Split, epochs: int) -> ModelArtifact:
    seed_everything(0)
    artifact = ModelArtifact.build(spec, train.input_shape, train.num_classes)
    fit(artifact.model, train, TrainConfig(epochs=epochs, batch_size=128, lr=1e-3), val=val)
    return artifact


def quantized(
    artifact: ModelArtifact, method: str, train: Split, val: Split, **override: object
) -> ModelArtifact:
    """The quantize stage with the method's options as the project's defaults set them."""
    options = yaml.safe_load((ROOT / "conf/base/parameters_quantize.yml").read_text())["quantize"]["options"]
    stage = QuantizeStage(method=method, options={method: {**(options.get(method) or {}), **override}})
    return run_method(stage, artifact, train, val, teacher=artifact)[0]


def pruned(artifact: ModelArtifact, method: str, options: dict, train: Split, val: Split) -> ModelArtifact:
    stage = PruneStage(method=method, options={method: options}, finetune=FINETUNE)
    return run_method(stage, copy.deepcopy(artifact), train, val, train_cfg=stage.finetune)[0]


class ByBatch:
    """The deployed model as a server routes it: each batch size to the runtime chosen for it
    (the nearest measured size at or below; the smallest otherwise)."""

    def __init__(self, runners: dict[int, Runner]) -> None:
        self.runners = dict(sorted(runners.items()))

    def __call__(self, x: torch.Tensor) -> Any:
        size = max((b for b in self.runners if b <= len(x)), default=min(self.runners))
        return self.runners[size](x)

    def predict(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        return torch.cat([torch.as_tensor(self(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def deployed(
    key: str, artifact: ModelArtifact, train: Split, val: Split, test: Split, threads: int
) -> dict[str, dict[str, Any]]:
    """The compressed model of ``DEPLOYED[key]``, through the export stage's runtime selection at
    batch sizes 1 and 256 (chosen on the validation split, on ``threads`` threads)."""
    label, method, options, quantizer = DEPLOYED[key]
    start = time.perf_counter()
    model = pruned(artifact, method, options, train, val)
    if quantizer:
        model = quantized(model, quantizer, train, val)
    cfg = ExportConfig(batch_sizes=[1, 256], serve_batch=1, rounds=3)
    measure = MeasureConfig(warmup=5, latency_runs=100, throughput_runs=10, threads=threads)
    chosen = deploy(model, artifact, val, test, list(calibration_batches(train, 8, 128)), cfg, measure)
    runners = {b: chosen.built[name].runner for b, name in chosen.chosen.items()}
    choice = ", ".join(f"b{b}: {name}" for b, name in sorted(chosen.chosen.items()))
    return {
        f"shrinkflow deployed: {label}": {
            "runner": ByBatch(runners),
            "runtime": f"chosen ({choice})",
            "deployment": chosen.to_dict(),
            "artifact_bytes": len(chosen.served.data),
            "build_seconds": time.perf_counter() - start,
        }
    }


def variants(
    artifact: ModelArtifact, int8_method: str, train: Split, val: Split, threads: int, openvino: bool
) -> dict[str, dict[str, Any]]:
    """name -> {runner, runtime, and what the table shows besides speed}; the OpenVINO rows when
    ``openvino``."""
    calibration = list(calibration_batches(train, 8, 128))
    example = val.head(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = torch.ao.quantization.quantize_dynamic(copy.deepcopy(artifact.model).eval(), {nn.Linear})
    ours_dynamic = quantized(artifact, "dynamic_int8", train, val)
    # torch.ao FX: the static int8 flow with eager int8 kernels (the default PT2E graph runs int8
    # only once exported; benchmarks/cnn.py measures that path)
    ours_static = quantized(artifact, "static_int8", train, val, backend="fx")
    ours = {"dynamic_int8": ours_dynamic, "static_int8": ours_static}[int8_method]
    ours_onnx = export_artifact(ours, example, calibration, ExportConfig())
    assert ours_onnx.format == "int8"
    fp32_onnx = to_onnx(artifact.model, example)
    ort_int8 = quantize_int8(fp32_onnx, calibration, ExportConfig())
    unstructured = pruned(artifact, "magnitude", {"sparsity": 0.5}, train, val)
    structured = pruned(artifact, "channel", {"ratio": 0.5}, train, val)
    torch_models = {
        "fp32 eager": artifact.model,
        "torch.ao dynamic int8": direct,
        "shrinkflow dynamic_int8 (PyTorch)": ours_dynamic.model,
        "shrinkflow static_int8 (PyTorch)": ours_static.model,
        "unstructured 50% (PyTorch)": unstructured.model,
        "structured 50% (PyTorch)": structured.model,
    }
    onnx_models = {
        "shrinkflow int8 (ONNX QDQ)": ours_onnx.data,
        "ONNX Runtime fp32": fp32_onnx,
        "ONNX Runtime int8": ort_int8,
        "structured 50% (ONNX Runtime fp32)": to_onnx(structured.model, example),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, model in torch_models.items():
        model.eval()
        out[name] = {
            "runner": model,
            "runtime": "PyTorch",
            "params": count_parameters(model)[0],
            "bytes_in_memory": model_bytes(model),
        }
    for name, data in onnx_models.items():
        out[name] = {
            "runner": OnnxModel(data, threads=threads),
            "runtime": "ONNX Runtime",
            "onnx_bytes": len(data),
        }
    out["shrinkflow int8 (ONNX QDQ)"].update(
        agrees_with=f"shrinkflow {int8_method} (PyTorch)",
        method=int8_method,
        qparams=ours_onnx.qparams,
    )
    if openvino:
        out.update(openvino_variants(fp32_onnx, calibration, threads))
    return out


def predictions(runner: Runner, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if isinstance(runner, nn.Module):
            return predict(runner, x, 1000).argmax(1)
        return runner.predict(x, 1000).argmax(1)


def summarize(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    base = found["fp32 eager"]
    rows = []
    for name, v in found.items():
        rows.append(
            {
                "variant": name,
                "runtime": v["runtime"],
                "accuracy": v["accuracy"],
                "accuracy_delta_pp": 100 * (v["accuracy"] - base["accuracy"]),
                **timing_row(v, base),
                **{
                    k: v[k]
                    for k in (
                        "params",
                        "bytes_in_memory",
                        "onnx_bytes",
                        "peak_memory_bytes",
                        "agreement",
                        "method",
                        "qparams",
                        "ir_bytes",
                        "build_seconds",
                        "deployment",
                        "artifact_bytes",
                    )
                    if k in v
                },
            }
        )
    return rows


def run_model(
    key: str, data: tuple[Split, Split, Split], threads: list[int], args: argparse.Namespace
) -> dict:  # args.openvino_missing: why the OpenVINO rows are skipped, or None
    title, spec, epochs, int8_method = MODELS[key]
    train, val, test = data
    torch.set_num_threads(max(threads))
    start = time.perf_counter()
    artifact = train_fp32(spec, train, val, epochs)
    print(f"[{key}] trained in {time.perf_counter() - start:.0f} s", flush=True)
    tables = {}
    for n in threads:
        torch.set_num_threads(n)
        found = variants(artifact, int8_method, train, val, n, openvino=args.openvino_missing is None)
        found.update(deployed(key, artifact, train, val, test, n))
        for name, v in found.items():
            if "build_seconds" in v:
                print(f"[{key}] {name} built in {v['build_seconds']:.1f} s", flush=True)
        x = test.x  # the test images, read once for every variant
        big = large_batch(x, 256)
        for v in found.values():
            v["predicted"] = predictions(v["runner"], x)
            v["accuracy"] = int((v["predicted"] == test.y).sum()) / len(test)
        for v in found.values():
            if "agrees_with" in v:
                v["agreement"] = float(
                    (v["predicted"] == found[v["agrees_with"]]["predicted"]).float().mean()
                )
            if v["runtime"] == "PyTorch":
                v["peak_memory_bytes"] = v["bytes_in_memory"] + activation_peak_bytes(v["runner"], big)
        time_rounds(found, x, args.rounds, args.b1_runs, args.b256_runs, warmup=5)
        tables[n] = summarize(found)
        print(f"[{key}] {n} thread(s) timed at {time.perf_counter() - start:.0f} s", flush=True)
    return {"model": title, "key": key, "epochs": epochs, "tables": tables}


def findings(result: dict, threads: str) -> list[str]:
    """The comparisons the table is for, computed from its rows."""
    rows = {r["variant"]: r for r in result["tables"][threads]}
    ours, direct = rows["shrinkflow int8 (ONNX QDQ)"], rows["torch.ao dynamic int8"]
    pt, ort = rows["structured 50% (PyTorch)"], rows["structured 50% (ONNX Runtime fp32)"]
    slower = [
        f"{name} ({r['latency_b1_speedup']:.2f}x at b1, {r['throughput_b256_speedup']:.2f}x at b256)"
        for name, r in rows.items()
        if min(r["latency_b1_speedup"], r["throughput_b256_speedup"]) < 0.95
    ]
    lines = [
        f"- int8: ours ({ours['method']} + ONNX export, {ours['qparams']} qparams) "
        f"{ours['throughput_b256_speedup']:.2f}x fp32 eager at b256, "
        f"{ours['latency_b1_speedup']:.2f}x at b1, {ours['accuracy_delta_pp']:+.2f} pp, agreeing with the PyTorch "
        f"int8 model on {ours['agreement']:.2%} of test images; `torch.ao` dynamic int8 "
        f"{direct['throughput_b256_speedup']:.2f}x / {direct['latency_b1_speedup']:.2f}x; ours over `torch.ao`: "
        f"{ours['throughput_b256_speedup'] / direct['throughput_b256_speedup']:.2f}x at b256, "
        f"{ours['latency_b1_speedup'] / direct['latency_b1_speedup']:.2f}x at b1.",
        f"- structured 50% vs unpruned at b1: {pt['latency_b1_speedup']:.2f}x in PyTorch, "
        f"{ort['latency_b1_speedup'] / rows['ONNX Runtime fp32']['latency_b1_speedup']:.2f}x in ONNX Runtime; "
        f"at b256 {pt['throughput_b256_speedup']:.2f}x / "
        f"{ort['throughput_b256_speedup'] / rows['ONNX Runtime fp32']['throughput_b256_speedup']:.2f}x; "
        f"accuracy {pt['accuracy_delta_pp']:+.2f} pp after fine-tuning.",
        "- slower than fp32 eager: " + ("; ".join(slower) if slower else "none") + ".",
    ]
    for name, r in rows.items():
        if name.startswith("shrinkflow deployed"):
            d = r["deployment"]
            lines.append(
                f"- {name}: {r['throughput_b256_speedup']:.2f}x fp32 eager at b256, {r['latency_b1_speedup']:.2f}x "
                f"at b1, {r['accuracy_delta_pp']:+.2f} pp; runtimes chosen on the validation split among "
                + ", ".join(sorted({c["runtime"] for c in d["candidates"]}))
                + (f" (skipped: {', '.join(d['skipped'])})" if d["skipped"] else "")
                + f": {r['runtime'].removeprefix('chosen (').rstrip(')')}."
            )
    if "NNCF PTQ int8 (OpenVINO)" in rows:
        lines.append(_openvino_finding(rows))
    return lines


def _openvino_finding(rows: dict[str, dict[str, Any]]) -> str:
    nncf, ov = rows["NNCF PTQ int8 (OpenVINO)"], rows["OpenVINO fp32"]

    def over(a: dict, b: dict) -> str:  # a's speed-up over b, at b256 / b1
        return (
            f"{a['throughput_b256_speedup'] / b['throughput_b256_speedup']:.2f}x / "
            f"{a['latency_b1_speedup'] / b['latency_b1_speedup']:.2f}x"
        )

    return (
        f"- OpenVINO: NNCF PTQ int8 {nncf['throughput_b256_speedup']:.2f}x fp32 eager at b256, "
        f"{nncf['latency_b1_speedup']:.2f}x at b1, {nncf['accuracy_delta_pp']:+.2f} pp, agreeing with fp32 eager on "
        f"{nncf['agreement']:.2%} of test images (built in {nncf['build_seconds']:.1f} s); OpenVINO fp32 "
        f"{ov['throughput_b256_speedup']:.2f}x / {ov['latency_b1_speedup']:.2f}x. At b256 / b1: NNCF int8 over "
        f"OpenVINO fp32 {over(nncf, ov)}, over ONNX Runtime int8 {over(nncf, rows['ONNX Runtime int8'])}, over "
        f"ours {over(nncf, rows['shrinkflow int8 (ONNX QDQ)'])}; OpenVINO fp32 over ONNX Runtime fp32 "
        f"{over(ov, rows['ONNX Runtime fp32'])}."
    )


def _int8_vs_fp32(results: list[dict]) -> list[str]:
    """ONNX Runtime int8 against its fp32 on this CPU, per model at 1 thread (measured, not assumed)."""
    parts = []
    for result in results:
        rows = {r["variant"]: r for r in result["tables"][min(result["tables"], key=int)]}
        int8, fp32 = rows["ONNX Runtime int8"], rows["ONNX Runtime fp32"]
        parts.append(
            f"{result['model']} {int8['throughput_b256_speedup'] / fp32['throughput_b256_speedup']:.2f}x at b256, "
            f"{int8['latency_b1_speedup'] / fp32['latency_b1_speedup']:.2f}x at b1"
        )
    return ["", "ONNX Runtime int8 over ONNX Runtime fp32 on this CPU (1 thread): " + "; ".join(parts) + "."]


def markdown(results: list[dict], header: dict) -> str:
    lines = [
        "# shrinkflow beside its peers on MNIST",
        "",
        f"Measured {header['date']} on {header['cpu']}; Python {header['python']}, torch {header['torch']}, "
        f"onnxruntime {header['onnxruntime']}, onnx {header['onnx']}, torch-pruning {header['torch_pruning']}, "
        f"shrinkflow {header['shrinkflow']}"
        + (f", openvino {header['openvino']}, nncf {header['nncf']}" if "openvino" in header else "")
        + f". Wall time {header['seconds']:.0f} s. Command: `{header['command']}`.",
        "",
        "Speed-ups are the median over interleaved rounds of each variant's ratio to fp32 eager PyTorch in the "
        "same round (> 1 is faster); the b256 range is the lowest and highest round. Accuracy is top-1 on the "
        "10,000 MNIST test images. Peak memory (PyTorch variants) is the model's tensors in memory plus the "
        "activation peak of one batch-256 forward pass (torch profiler).",
        "",
        "Why some compressed variants are slower: `torch.ao` dynamic int8 quantizes each input, packs it and "
        "dequantizes the output on every call; at batch 1 on these small layers those fixed costs exceed the "
        "matrix product they speed up, so it is slower than fp32 there and pays off only at large batches. "
        "Unstructured sparsity leaves dense shapes, so dense kernels do the same work. Our int8 path for the "
        "CNNs is dynamic_int8 (convolutions float): ONNX Runtime's int8 convolutions measure slower than its "
        "fp32 ones on these small CNNs (on AVX2 and on AVX-512 VNNI alike, the line below); for Linear-heavy "
        "models it is the default, static_int8 exported to ONNX with its own qparams. Which runtime is fastest "
        "depends on the CPU; the deployed rows measure it here.",
        *_int8_vs_fp32(results),
    ]
    if header.get("openvino_skipped"):
        lines += ["", f"OpenVINO rows skipped: {header['openvino_skipped']}."]
    for result in results:
        for threads, rows in result["tables"].items():
            lines += [
                "",
                f"## {result['model']} ({threads} thread{'s' if int(threads) > 1 else ''})",
                "",
                "| variant | runtime | accuracy | Δ pp | latency b1 (ms) | b1 speed-up | throughput b256 (samples/s) "
                "| b256 speed-up (range) | size | peak memory |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in rows:
                size = (
                    f"{r['onnx_bytes']:,} B onnx"
                    if "onnx_bytes" in r
                    else f"{r['ir_bytes']:,} B IR"
                    if "ir_bytes" in r
                    else f"{r['artifact_bytes']:,} B served"
                    if "artifact_bytes" in r
                    else f"{r['bytes_in_memory']:,} B"
                )
                low, high = r["throughput_b256_speedup_range"]
                memory = f"{r['peak_memory_bytes']:,} B" if "peak_memory_bytes" in r else ""
                lines.append(
                    f"| {r['variant']} | {r['runtime']} | {r['accuracy']:.4f} | {r['accuracy_delta_pp']:+.2f} "
                    f"| {r['latency_b1_ms']:.4f} | {r['latency_b1_speedup']:.2f}x | {r['throughput_b256_sps']:,.0f} "
                    f"| {r['throughput_b256_speedup']:.2f}x ({low:.2f}-{high:.2f}) | {size} | {memory} |"
                )
            lines += ["", *findings(result, threads)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared/datasets/mnist")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--b1-runs", type=int, default=100)
    parser.add_argument("--b256-runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.openvino_missing = missing()
    if args.openvino_missing:
        print(
            f"OpenVINO rows skipped ({args.openvino_missing}); for them: "
            'pip install -c constraints.txt -e ".[openvino]"',
            flush=True,
        )
    raw = mnist(str(args.mnist))
    # a 5,000-image validation split for the fine-tuning loops; the official test set for every figure
    order = torch.randperm(len(raw.data), generator=torch.Generator().manual_seed(0))
    train, val = Split(raw.data, order[5000:]), Split(raw.data, order[:5000])
    assert raw.test is not None
    test = Split(raw.test, torch.arange(len(raw.test)))
    results = [run_model(key, (train, val, test), args.threads, args) for key in args.models]
    header = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        **{
            k.replace("-", "_"): version(k)
            for k in ("torch", "onnxruntime", "onnx", "torch-pruning", "shrinkflow")
            + (("openvino", "nncf") if args.openvino_missing is None else ())
        },
        **({"openvino_skipped": args.openvino_missing} if args.openvino_missing else {}),
        "seconds": time.perf_counter() - start,
        "command": "python benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps({"header": header, "results": results}, indent=2) + "\n")
    (args.out / "peers.md").write_text(markdown(results, header))
    print(markdown(results, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
