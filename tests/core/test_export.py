"""ONNX export: float models as they are, int8 models as QDQ through ONNX Runtime, and the runner."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import onnx
import onnxruntime as ort
import pytest
import torch

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split, calibration_batches
from shrinkflow.core.export import (
    ExportConfig,
    ExportError,
    OnnxModel,
    export_artifact,
    float_twin,
    int8_modules,
    is_static_int8,
    onnx_op_types,
    to_onnx,
)
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.qgraph import is_int8_graph
from shrinkflow.core.sparsity import weight_tensors
from shrinkflow.core.training import TrainConfig, fit, seed_everything
from shrinkflow.stages import QuantizeStage, run_method


@pytest.fixture(scope="module")
def teacher(digits_splits) -> ModelArtifact:
    train, _, _ = digits_splits
    seed_everything(0)
    artifact = ModelArtifact.build(ModelSpec("mlp", {"hidden": [64]}), train.input_shape, train.num_classes)
    fit(artifact.model, train, TrainConfig(epochs=8, lr=3e-3))
    return artifact


def _quantized(teacher: ModelArtifact, splits, method: str, **options) -> ModelArtifact:
    train, val, _ = splits
    stage = QuantizeStage(method=method, options={method: options})
    return run_method(stage, teacher, train, val, teacher=teacher)[0]


def _export(artifact: ModelArtifact, splits, **options) -> tuple[bytes, str]:
    """(bytes, format) of the export, its qparams source checked against the model kind."""
    train, _, test = splits
    exported = export_artifact(
        artifact, test.x[:2], calibration_batches(train, 4, 128), ExportConfig(**options)
    )
    expected = (
        "none"
        if exported.format == "float"
        else "torch"
        if is_static_int8(artifact.model) or is_int8_graph(artifact.model)
        else "calibrated"
    )
    assert exported.qparams == expected
    return exported.data, exported.format


def _ops(data: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(data).graph.node}


def test_float_export_runs_in_onnx_runtime_with_the_same_logits_at_any_batch(teacher, digits_splits):
    test = digits_splits[2]
    data = to_onnx(teacher.model, test.x[:1])  # a batch-1 example must not freeze the batch axis
    onnx.checker.check_model(onnx.load_from_string(data))
    session = OnnxModel(data)
    with torch.inference_mode():
        for n in (1, 7, len(test)):
            torch.testing.assert_close(session(test.x[:n]), teacher.model(test.x[:n]), atol=1e-4, rtol=1e-4)


def test_dynamic_int8_model_exports_as_qdq_and_agrees_with_pytorch(teacher, digits_splits):
    test = digits_splits[2]
    quantized = _quantized(teacher, digits_splits, "dynamic_int8")
    float_bytes, fmt_float = _export(teacher, digits_splits)
    data, fmt = _export(quantized, digits_splits)
    assert (fmt_float, fmt) == ("float", "int8")
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(data)
    int8_weights = [
        t for t in onnx.load_from_string(data).graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    assert sum(len(t.raw_data) for t in int8_weights) == 64 * 64 + 64 * 10  # every weight, one byte each
    assert len(data) < len(float_bytes) / 1.8  # graph, biases and scales weigh more in a tiny model
    with torch.inference_mode():
        reference = quantized.model(test.x).argmax(1)
    agreement = float((OnnxModel(data).predict(test.x).argmax(1) == reference).float().mean())
    assert agreement >= 0.99


@pytest.mark.parametrize("method", ["dynamic_int8", "static_int8"])
def test_float_twin_holds_exactly_the_dequantized_int8_weights(teacher, digits_splits, method):
    quantized = _quantized(
        teacher, digits_splits, method, **({"backend": "fx"} if method == "static_int8" else {})
    )
    assert int8_modules(quantized.model)
    twin = float_twin(quantized)
    assert not int8_modules(twin)
    dequantized = dict(weight_tensors(quantized.model))
    for name, tensor in twin.state_dict().items():
        assert torch.equal(tensor, dequantized[name]), name
    assert any(not torch.equal(t, teacher.model.state_dict()[n]) for n, t in twin.state_dict().items())


def test_a_dynamic_int8_model_with_batchnorm_exports_its_running_statistics(digits_splits):
    """A BatchNorm's buffers are not weights: the float twin takes them from the int8 model."""
    train, _, test = digits_splits
    seed_everything(0)
    base = ModelArtifact.build(ModelSpec("resnet20", {"width": 8}), train.input_shape, train.num_classes)
    fit(base.model, train, TrainConfig(epochs=4, lr=3e-3))  # BN statistics away from their 0/1 init
    quantized = _quantized(base, digits_splits, "dynamic_int8")
    twin = float_twin(quantized)
    bn = dict(quantized.model.named_modules())["layers.0.bn1"]
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(twin.state_dict()["layers.0.bn1.running_mean"], bn.running_mean)
    data, fmt = _export(quantized, digits_splits)
    assert fmt == "int8"
    logits = OnnxModel(data).predict(test.x)
    with torch.no_grad():
        reference = quantized.model(test.x)
    # convolutions stay float (dynamic int8 quantizes Linear only): the classifier alone differs
    agreement = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    accuracy = float((reference.argmax(1) == test.y).float().mean())
    assert accuracy > 0.9 and agreement >= 0.99, (accuracy, agreement)


def test_the_export_quantizes_the_layer_types_the_pytorch_model_quantized(digits_splits):
    train = digits_splits[0]
    cnn = ModelArtifact.build(ModelSpec("lenet5"), train.input_shape, train.num_classes)
    dynamic = _quantized(cnn, digits_splits, "dynamic_int8")  # Linear only: convolutions stay float
    static = _quantized(cnn, digits_splits, "static_int8")  # convolutions too
    assert onnx_op_types(dynamic.model) == ["MatMul", "Gemm"]
    assert onnx_op_types(static.model) is None  # everything int8, layer to layer

    def quantized_inputs(data: bytes) -> dict[str, int]:
        graph = onnx.load_from_string(data).graph
        dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        return {
            op: sum(1 for n in graph.node if n.op_type == op and n.input[0] in dequantized)
            for op in ("Conv", "Gemm")
        }

    assert quantized_inputs(_export(dynamic, digits_splits)[0]) == {"Conv": 0, "Gemm": 3}
    assert quantized_inputs(_export(static, digits_splits)[0]) == {"Conv": 2, "Gemm": 3}


def test_half_model_exports_as_float_with_its_half_precision_values(teacher, digits_splits):
    test = digits_splits[2]
    half = _quantized(teacher, digits_splits, "half")
    data, fmt = _export(half, digits_splits)
    assert fmt == "float"
    with torch.inference_mode():
        expected = half.model(test.x)
    torch.testing.assert_close(OnnxModel(data)(test.x), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(expected, teacher.model(test.x), atol=1e-4)  # rounding to fp16 shows


def test_format_int8_quantizes_a_float_model_and_float_keeps_an_int8_one_float(teacher, digits_splits):
    data, fmt = _export(teacher, digits_splits, format="int8")
    assert fmt == "int8" and "QuantizeLinear" in _ops(data)
    data, fmt = _export(_quantized(teacher, digits_splits, "dynamic_int8"), digits_splits, format="float")
    assert fmt == "float" and "QuantizeLinear" not in _ops(data)


def test_float_twin_names_the_weights_it_cannot_place(teacher, digits_splits):
    quantized = _quantized(teacher, digits_splits, "dynamic_int8")
    renamed = ModelArtifact(
        quantized.model, ModelSpec("mlp", {"hidden": [32]}), quantized.input_shape, 10, quantized.recipe
    )
    with pytest.raises(ExportError, match=r"no tensor of the right shape for \['1.bias', '1.weight'"):
        float_twin(renamed)


def test_onnx_runtime_refuses_bytes_that_are_not_a_model():
    with pytest.raises(ExportError, match=r"ONNX Runtime cannot load the model \(9 bytes\)"):
        OnnxModel(b"not onnx!")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "int4"}, "format='int4' is invalid: expected one of"),
        ({"opset": 17}, "opset=17 is invalid: expected an integer with 18 <= opset <= 23"),
        ({"reduce_range": "yes"}, "reduce_range='yes' is invalid: expected true or false"),
        ({"activation": "fp8"}, "activation='fp8' is invalid"),
        ({"calibration_batches": 0}, "calibration_batches=0 is invalid"),
    ],
)
def test_export_config_names_the_bad_value(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExportConfig(**options)


@pytest.mark.parametrize("method", ["static_int8", "qat"])
def test_a_pt2e_int8_graph_exports_with_its_own_int8_weights_and_computes_what_pytorch_computes(
    teacher, digits_splits, method
):
    test = digits_splits[2]
    quantized = _quantized(teacher, digits_splits, method)  # backend: pt2e, the default
    assert is_int8_graph(quantized.model) and int8_modules(quantized.model) == ["1", "3"]
    data, fmt = _export(quantized, digits_splits)  # checks qparams == "torch"
    assert fmt == "int8"
    graph = onnx.load_from_string(data).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    arrays = [onnx.numpy_helper.to_array(t) for t in graph.initializer] + [
        onnx.numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
    ]
    in_file = {a.tobytes() for a in arrays if a.dtype.name == "int8"}
    weights = [t for t in quantized.model.state_dict().values() if t.dtype == torch.int8]
    assert len(weights) == 2 and all(w.numpy().tobytes() in in_file for w in weights)
    with torch.inference_mode():
        expected = quantized.model(test.x)
    logits = OnnxModel(data).predict(test.x)
    # measured max |difference| 0.0036 (logits span 13): requantization rounding only
    assert float((logits - expected).abs().max()) <= 0.02
    assert torch.equal(logits.argmax(1), expected.argmax(1))


@pytest.mark.parametrize("method", ["static_int8", "qat"])
def test_a_static_int8_fx_model_exports_with_its_own_qparams_and_computes_what_pytorch_computes(
    teacher, digits_splits, method
):
    test = digits_splits[2]
    quantized = _quantized(teacher, digits_splits, method, backend="fx")
    assert is_static_int8(quantized.model)
    data, fmt = _export(quantized, digits_splits)  # checks qparams == "torch"
    assert fmt == "int8"
    graph = onnx.load_from_string(data).graph
    # torch's int8 weights travel as they are: every quantized Linear's int_repr is in the file
    arrays = [onnx.numpy_helper.to_array(t) for t in graph.initializer] + [
        onnx.numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
    ]
    int8 = {a.tobytes() for a in arrays if a.dtype.name == "int8"}
    linears = [m for m in quantized.model.modules() if hasattr(m, "weight") and callable(m.weight)]
    assert len(linears) == 2 and all(m.weight().int_repr().numpy().tobytes() in int8 for m in linears)
    with torch.inference_mode():
        expected = quantized.model(test.x)
    logits = OnnxModel(data).predict(test.x)
    # the same integer arithmetic: logits equal up to one step of the output scale
    assert (logits - expected).abs().max() <= linears[-1].scale + 1e-6
    assert torch.equal(logits.argmax(1), expected.argmax(1))


def test_a_static_int8_model_the_torch_exporter_rejects_is_recalibrated_in_onnx_runtime(
    teacher, digits_splits, monkeypatch, caplog
):
    train, _, test = digits_splits
    quantized = _quantized(teacher, digits_splits, "static_int8", backend="fx")

    def reject(*args, **kwargs):
        raise RuntimeError("no symbolic for quantized::made_up")

    monkeypatch.setattr(torch.jit, "trace", reject)
    exported = export_artifact(quantized, test.x[:2], calibration_batches(train, 4, 128), ExportConfig())
    assert (exported.format, exported.qparams) == ("int8", "calibrated")
    assert "TorchScript, opset 18) failed for the int8 GraphModule: RuntimeError: no symbolic" in caplog.text
    with torch.inference_mode():
        reference = quantized.model(test.x).argmax(1)
    assert float((OnnxModel(exported.data).predict(test.x).argmax(1) == reference).float().mean()) >= 0.99


def test_the_runner_returns_a_fresh_tensor_per_call_at_every_shape_and_on_every_thread(
    teacher, digits_splits
):
    test = digits_splits[2]
    data = to_onnx(teacher.model, test.x[:2])
    runner, session = OnnxModel(data), ort.InferenceSession(data, providers=["CPUExecutionProvider"])

    def expected(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])

    first = runner(test.x[:3])
    second = runner(test.x[3:6])  # same shape: the bound output buffer is reused ...
    torch.testing.assert_close(first, expected(test.x[:3]))  # ... but not the returned tensor
    torch.testing.assert_close(second, expected(test.x[3:6]))
    for n in (1, 2, 5, 7, 11, 13, 17, 19, 23, 29, 1):  # more shapes than the cache holds
        torch.testing.assert_close(runner(test.x[:n]), expected(test.x[:n]))
    torch.testing.assert_close(runner(test.x[:4].double()), expected(test.x[:4]))  # cast to float32
    torch.testing.assert_close(runner(test.x[:8:2]), expected(test.x[:8:2].contiguous()))  # strided

    chunks = [test.x[i : i + 4] for i in range(0, 200, 4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(runner, chunks))
    for chunk, result in zip(chunks, results, strict=True):
        torch.testing.assert_close(result, expected(chunk))


def test_a_token_id_model_exports_with_dynamic_batch_and_sequence_axes():

    torch.manual_seed(0)
    spec = ModelSpec(
        "transformer_encoder", {"vocab_size": 60, "d_model": 32, "heads": 4, "layers": 2, "ffn": 64}
    )
    artifact = ModelArtifact.build(spec, (64,), 2)
    model = artifact.model.eval()
    tokens = torch.randint(4, 60, (6, 40))
    tokens[:, 0], tokens[2, 9:] = 2, 0  # [CLS]; padding
    data = to_onnx(model, tokens[:1, :5])
    graph = onnx.load_from_string(data).graph
    (inputs,) = graph.input
    assert inputs.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in inputs.type.tensor_type.shape.dim] == ["batch", "sequence"]
    session = OnnxModel(data)
    with torch.no_grad():
        for batch, length in ((1, 3), (6, 17), (4, 40)):
            x = tokens[:batch, :length]
            assert torch.allclose(session(x), model(x), atol=1e-4), (batch, length)
    calibration = [tokens[:3, :20], tokens[3:, :35]]  # calibration batches of different lengths
    static = export_artifact(
        artifact, tokens[:2], calibration, ExportConfig(format="int8", int8_activations="static")
    )
    assert static.qparams == "calibrated" and "QuantizeLinear" in _ops(static.data)
    # token-id models: int8 weights, activations quantized per batch, as PyTorch's dynamic int8 does
    dynamic = export_artifact(artifact, tokens[:2], calibration, ExportConfig(format="int8"))
    assert dynamic.qparams == "dynamic" and "MatMulInteger" in _ops(dynamic.data)
    assert "QuantizeLinear" not in _ops(dynamic.data)
    data = Split.of(tokens, torch.zeros(len(tokens), dtype=torch.int64), 2)
    int8 = run_method(QuantizeStage(method="dynamic_int8"), artifact, data, data)[0]
    exported = export_artifact(int8, tokens[:2], calibration, ExportConfig())
    assert exported.qparams == "dynamic"
    with torch.no_grad():
        torch_int8, onnx_int8 = int8.model(tokens), OnnxModel(exported.data)(tokens)
    assert (onnx_int8.argmax(1) == torch_int8.argmax(1)).all()
    assert (onnx_int8 - torch_int8).abs().max() < 0.05
