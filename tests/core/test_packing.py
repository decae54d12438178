"""The packed format: lossless for every dtype and encoding, Deep Compression's sizes, safe errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune

from shrinkflow.core import artifact, packing
from shrinkflow.core.artifact import ArtifactError, ModelArtifact
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.sparsity import prunable
from shrinkflow.methods.quantization.dynamic_int8 import DynamicInt8Config
from shrinkflow.methods.quantization.dynamic_int8 import plugin as dynamic_int8
from shrinkflow.methods.quantization.weight_sharing import WeightSharingConfig, share_weights

X = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _lenet300(sparsity: float = 0.0, bits: int | None = None) -> ModelArtifact:
    torch.manual_seed(0)
    art = ModelArtifact.build(ModelSpec("lenet_300_100"), (1, 28, 28), 10)
    if sparsity:
        for _, m in prunable(art.model):
            prune.l1_unstructured(m, "weight", amount=sparsity)
            prune.remove(m, "weight")
    if bits is not None:
        tied = share_weights(art.model, WeightSharingConfig(bits=bits))
        for m in tied.values():
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return art


def _same(a: ModelArtifact, b: ModelArtifact) -> bool:
    with torch.inference_mode():
        return torch.equal(a.model(X), b.model(X))


def test_a_dense_fp32_model_packs_to_its_raw_weights_plus_a_small_header():
    art = _lenet300()
    data = packing.to_bytes(art)
    raw = 4 * 266_610
    assert raw < len(data) < raw + 3000
    assert {row["encoding"] for row in packing.describe(data).values()} == {"raw"}
    assert _same(packing.from_bytes(data), art)


def test_pruning_then_weight_sharing_gives_deep_compression_sizes():
    dense = len(packing.to_bytes(_lenet300()))
    sparse = _lenet300(sparsity=0.92)
    shared = _lenet300(sparsity=0.92, bits=5)
    sparse_bytes, shared_bytes = len(packing.to_bytes(sparse)), len(packing.to_bytes(shared))
    # 8% of 266k weights: fp32 values + ~5-bit relative indices, then 5-bit shared values
    assert 10 < dense / sparse_bytes < 13
    assert dense / shared_bytes > 35
    rows = packing.describe(packing.to_bytes(shared))
    assert rows["1.weight"]["encoding"] == "sparse" and rows["1.weight"]["codebook"] == 32
    assert rows["1.weight"]["entries"] >= round(0.08 * 235_200)  # every non-zero, plus fillers
    assert _same(packing.from_bytes(packing.to_bytes(shared)), shared)
    assert _same(packing.from_bytes(packing.to_bytes(sparse)), sparse)


def test_negative_zeros_from_masking_are_packed_as_zeros():
    art = _lenet300()
    w = art.model[1].weight
    with torch.no_grad():
        w.mul_((w.abs() > 0.02).float())  # masking leaves -0.0 where w was negative
    assert bool((torch.signbit(w) & (w == 0)).any())
    rows = packing.describe(packing.to_bytes(art))
    assert rows["1.weight"]["encoding"] == "sparse"
    assert _same(packing.from_bytes(packing.to_bytes(art)), art)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_every_float_dtype_round_trips_bit_exactly(dtype):
    t = torch.randn(40, 30).to(dtype)
    t[t.abs() < 0.8] = 0
    out = packing._Writer()
    meta = packing._encode_tensor(t, out)
    back = packing._decode_tensor(meta, memoryview(b"".join(out.parts)))
    assert back.dtype == dtype and torch.equal(back, t)


def test_a_dynamic_int8_model_packs_its_int8_weights_and_reloads_identically():
    art = _lenet300(sparsity=0.9)
    quantized = art.with_step(
        dynamic_int8.apply(art.model, DynamicInt8Config(), None),
        "shrinkflow.quantizers",
        "dynamic_int8",
        DynamicInt8Config().to_dict(),
    )
    data = packing.to_bytes(quantized)
    assert len(data) < len(artifact.to_bytes(quantized)) / 5  # int8 zeros coded sparsely
    assert _same(packing.from_bytes(data), quantized)


@pytest.mark.parametrize(
    ("t", "stored"),
    [
        (torch.rand(64).double(), "float32"),  # torch's per-channel scales: float32 values in float64
        (torch.rand(64, dtype=torch.float64), None),  # true doubles stay wide
        (torch.tensor([1.0, float("nan")], dtype=torch.float64), None),
        (torch.zeros(64, dtype=torch.int64), "int8"),  # zero points
        (torch.tensor([0, 300, -70_000], dtype=torch.int64), "int32"),
        (torch.tensor([0, 2**40], dtype=torch.int64), None),
    ],
)
def test_wide_tensors_are_stored_narrow_only_when_that_is_lossless(t, stored):
    out = packing._Writer()
    meta = packing._encode_tensor(t, out)
    assert meta.get("stored") == stored
    back = packing._decode_tensor(meta, memoryview(b"".join(out.parts)))
    assert back.dtype == t.dtype and torch.equal(back.view(torch.int64), t.view(torch.int64))  # bit-exact


def test_a_static_int8_model_stores_its_per_channel_scales_as_float32_and_reloads_identically():
    from shrinkflow.core.data import Split
    from shrinkflow.stages import QuantizeStage, run_method

    art = _lenet300(sparsity=0.9)
    calibration = Split.of(X, torch.arange(16) % 10, 10)
    stage = QuantizeStage(method="static_int8", options={"static_int8": {"backend": "fx"}})
    quantized = run_method(stage, art, calibration, calibration)[0]
    data = packing.to_bytes(quantized)
    header, _ = packing._header(data, "test")
    scales = header["tensors"]["1._packed_params._packed_params"]["items"][0]["scales"]
    assert (scales["dtype"], scales["stored"], scales["blobs"][0][1]) == ("float64", "float32", 4 * 300)
    assert _same(packing.from_bytes(data), quantized)


def test_version_2_files_without_narrowed_tensors_still_read():
    art = _lenet300(sparsity=0.5)
    data = packing.to_bytes(art)
    assert data.startswith(b"SFPACK3\n")
    assert _same(packing.from_bytes(b"SFPACK2\n" + data[8:]), art)


def test_save_and_load_go_through_a_file(tmp_path):
    art = _lenet300(sparsity=0.9, bits=4)
    size = packing.save(art, tmp_path / "m.sfpack")
    assert size == (tmp_path / "m.sfpack").stat().st_size
    assert _same(packing.load(tmp_path / "m.sfpack"), art)


def test_bad_files_raise_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        packing.load(tmp_path / "missing.sfpack")
    with pytest.raises(ArtifactError, match="not a packed shrinkflow model"):
        packing.from_bytes(b"PK\x03\x04 a zip file")
    data = packing.to_bytes(_lenet300(sparsity=0.9, bits=4))
    with pytest.raises(ArtifactError, match="corrupt"):
        packing.from_bytes(data[: len(data) // 3])


def test_an_all_zero_tensor_packs_to_a_few_bytes():
    t = torch.zeros(64, 32)
    out = packing._Writer()
    meta = packing._encode_tensor(t, out)
    assert meta["enc"] == "codebook" and sum(len(p) for p in out.parts) <= 4 + 1 + 64 * 32 // 8
    assert torch.equal(packing._decode_tensor(meta, memoryview(b"".join(out.parts))), t)
