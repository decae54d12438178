"""static_int8 / qat through torch.export + PT2E (``backend: pt2e``, the default): models torch.fx
cannot trace, reused modules, bit-identical restore from recorded qparams, per-tensor weights,
pruned zeros through QAT, measurement of int8 graphs, and the refusal before training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.measure import count_macs
from shrinkflow.core.models import MLP, ModelSpec
from shrinkflow.core.qgraph import graph_layers, is_int8_graph
from shrinkflow.core.sparsity import weight_tensors
from shrinkflow.core.training import TrainConfig, evaluate, fit, predict, seed_everything
from shrinkflow.methods.quantization import _pt2e
from shrinkflow.methods.quantization.qat import QATConfig
from shrinkflow.methods.quantization.qat import plugin as qat_plugin
from shrinkflow.methods.quantization.static_int8 import StaticInt8Config, plugin


class RankBranch(nn.Module):
    """Takes flat or image batches (``torch.fx`` cannot trace the branch) and calls one ReLU module
    twice around a residual sum, as torchvision's BasicBlock does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(x.shape[0], 1, 8, 8)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(x.mean(dim=(2, 3)))


class ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x) if x.mean() > 0.5 else self.fc(2 * x)


@pytest.fixture(scope="module")
def branchy(digits_splits) -> nn.Module:
    seed_everything(0)
    model = RankBranch()
    fit(model, digits_splits[0], TrainConfig(epochs=4, lr=3e-3))
    return model.eval()


def test_a_model_fx_cannot_trace_is_quantized_and_keeps_its_accuracy(branchy, make_ctx, digits_splits):
    test = digits_splits[2]
    with pytest.raises(ConfigError, match=r"torch\.fx can trace"):
        plugin.apply(copy.deepcopy(branchy), StaticInt8Config(backend="fx"), make_ctx())
    out = plugin.apply(copy.deepcopy(branchy), StaticInt8Config(), make_ctx())
    assert is_int8_graph(out)
    # the reused ReLU did not merge two calls into one pattern: every layer is int8
    assert [name for _, name in graph_layers(out)] == ["conv1", "conv2", "fc"]
    fp32, int8 = evaluate(branchy, test)[0], evaluate(out, test)[0]
    assert int8 >= fp32 - 0.01, (fp32, int8)  # measured: equal
    with pytest.raises(AssertionError, match="Guard failed"):  # captured for the data's shape only
        out(test.x.flatten(1))


def test_the_dynamic_batch_dimension_survives_quantization(branchy, make_ctx, digits_splits):
    out = plugin.apply(copy.deepcopy(branchy), StaticInt8Config(), make_ctx())
    x = digits_splits[2].x
    for n in (1, 3, 300):
        assert out(x[:n]).shape == (n, 10)


def test_restore_rebuilds_the_graph_bit_identically_from_recorded_qparams(make_ctx, digits_splits):
    x = digits_splits[2].x
    seed_everything(0)
    art = ModelArtifact.build(ModelSpec("resnet20", {"width": 4}), (1, 8, 8), 10)
    fit(art.model, digits_splits[0], TrainConfig(epochs=2, lr=3e-3))
    art.model.eval()
    cfg = StaticInt8Config()
    out = plugin.apply(copy.deepcopy(art.model), cfg, make_ctx())
    structure = plugin.structure(out)
    assert structure["backend"] == "pt2e" and len(structure["qparams"]) >= 20
    scales = [s for s, _ in structure["qparams"].values()]
    assert all(0 < s < 1 for s in scales) and len(set(scales)) > 10  # calibrated, per tensor
    step = art.with_step(out, plugins.QUANTIZERS, "static_int8", cfg.to_dict(), structure)
    reloaded = artifact.from_bytes(artifact.to_bytes(step))
    assert torch.equal(predict(reloaded.model, x), predict(out, x))
    # the rebuilt graph before the recorded qparams are written computes something else
    prepared = _pt2e.prepare(copy.deepcopy(art.model), [1, 8, 8], True, "histogram", False, "static_int8")
    prepared(torch.zeros(2, 1, 8, 8))
    unpatched = _pt2e.convert(prepared, [1, 8, 8])
    unpatched.load_state_dict(out.state_dict())
    assert not torch.equal(predict(unpatched, x), predict(out, x))


def test_restore_refuses_qparams_of_another_graph():
    record = {
        "backend": "pt2e",
        "input_shape": [1, 8, 8],
        "qparams": {"quantize_per_tensor_default_99": [0.1, 0]},
    }
    with pytest.raises(ConfigError, match=r"^structure\.qparams=.*quantize_per_tensor_default_99"):
        plugin.restore(MLP((1, 8, 8), 10, hidden=[8]), StaticInt8Config(), record)


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_are_symmetric_int8_per_channel_or_per_tensor(trained_mlp, make_ctx, per_channel):
    out = plugin.apply(trained_mlp, StaticInt8Config(per_channel=per_channel), make_ctx())
    layers = [n for n in out.graph.nodes if str(n.target) == "aten.linear.default"]
    weight_ops = {str(n.args[1].target).split(".")[1] for n in layers}
    assert weight_ops == {"dequantize_per_channel" if per_channel else "dequantize_per_tensor"}
    # biases are int32 at input scale x weight scale, one per output unit, as int8 runtimes add them
    biases = [n.args[2] for n in layers]
    bias_op = "dequantize_per_channel" if per_channel else "dequantize_per_tensor"
    assert all(str(b.target).split(".")[1] == bias_op and b.args[-1] == torch.int32 for b in biases)
    int8 = [t for t in out.state_dict().values() if t.dtype == torch.int8]
    assert [tuple(t.shape) for t in int8] == [(64, 64), (10, 64)]
    assert [tuple(t.shape) for t in out.state_dict().values() if t.dtype == torch.int32] == [(64,), (10,)]
    zero_points = [t for k, t in out.state_dict().items() if k.startswith("_zero_point")]
    assert all(int(z.abs().sum()) == 0 for z in zero_points)  # symmetric


def test_int8_graph_is_measured_like_the_float_model(trained_mlp, make_ctx, digits_splits):
    x = digits_splits[2].x
    out = plugin.apply(copy.deepcopy(trained_mlp), StaticInt8Config(), make_ctx())
    names = [n for n, _ in weight_tensors(out)]
    assert (
        names == [n for n, _ in weight_tensors(trained_mlp)] == ["1.weight", "1.bias", "3.weight", "3.bias"]
    )
    for (_, q), (_, f) in zip(weight_tensors(out), weight_tensors(trained_mlp), strict=True):
        assert float((q - f).abs().max()) <= float(f.abs().max()) / 127 + 1e-6  # one int8 step
    assert count_macs(out, x)[0] == count_macs(trained_mlp, x)[0] == 64 * 64 + 64 * 10
    wide = ModelArtifact.build(ModelSpec("mlp", {"hidden": [512, 512]}), (1, 8, 8), 10)
    quantized = wide.with_step(
        plugin.apply(copy.deepcopy(wide.model), StaticInt8Config(), make_ctx()),
        plugins.QUANTIZERS,
        "static_int8",
        {},
    )
    ratio = len(artifact.to_bytes(wide)) / len(artifact.to_bytes(quantized))
    assert 3.3 < ratio < 4.0  # int8 weights, fp32 biases and per-channel scales, int64 zero points


def test_qat_keeps_pruned_zeros_and_trains(trained_mlp, make_ctx, digits_splits):
    with torch.no_grad():
        for m in trained_mlp.modules():
            if isinstance(m, nn.Linear):
                m.weight[m.weight.abs() < m.weight.abs().quantile(0.8)] = 0.0
    zeros = {n: t == 0 for n, t in weight_tensors(trained_mlp) if n.endswith("weight")}
    ctx = make_ctx(epochs=2, lr=1e-3)
    out = qat_plugin.apply(copy.deepcopy(trained_mlp), QATConfig(keep_sparsity=True), ctx)
    assert is_int8_graph(out) and len(ctx.history) == 2
    kept = [bool((t[zeros[n]] == 0).all()) for n, t in weight_tensors(out) if n in zeros]
    assert kept == [True, True]
    assert evaluate(out, digits_splits[2])[0] >= evaluate(trained_mlp, digits_splits[2])[0] - 0.02


def test_a_model_branching_on_values_is_refused_by_the_check_naming_the_alternatives():
    for method, cfg in (("static_int8", StaticInt8Config()), ("qat", QATConfig())):
        with pytest.raises(ConfigError) as info:
            plugins.load(plugins.QUANTIZERS, method).check(ValueBranch(), cfg, (1, 8, 8))
        message = str(info.value)
        assert message.startswith("model='ValueBranch' is invalid: expected a model torch.export can capture")
        assert f"for {method}" in message and "use dynamic_int8, weight_sharing or half" in message
    plugin.check(RankBranch(), StaticInt8Config(), (1, 8, 8))  # shape branches are fine
