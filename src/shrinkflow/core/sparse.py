"""Unstructured sparsity that runs faster: Linear layers with their weights in CSR form.

Magnitude and AGP pruning leave exact zeros in dense weight tensors; dense kernels multiply them
all the same, so the pruned model is no faster (the most common complaint about pruning tools).
:class:`SparseLinear` holds the non-zero weights in compressed sparse rows and runs
``torch.addmm`` with a ``torch.sparse_csr_tensor`` (MKL's sparse BLAS on x86 CPUs): work in
proportion to the non-zeros. The fixed cost of a sparse call is higher than a dense one, so it pays
at large batches and high sparsity, not at batch 1; :mod:`shrinkflow.core.deploy` measures that
per model and batch size instead of assuming it.

Why by hand: torch has sparse tensors and kernels but no sparse ``nn.Linear``, and a CSR tensor
does not round-trip through ``load_state_dict``. The layer keeps its CSR arrays as three ordinary
buffers (row pointers, column indices, values), so its artifact is a plain state_dict that loads
with ``torch.load(weights_only=True)`` like every other; the recipe step ``sparse_csr`` (family
``shrinkflow.runtimes``, :mod:`shrinkflow.core.deploy`) records each layer's non-zero count so a fresh model gets buffers of the
right shapes before the tensors load. Convolutions are left dense: torch has no sparse
convolution on the CPU, and an im2col + CSR product measured slower than dense here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range

__all__ = ["SparseCSRConfig", "SparseLinear", "restore", "sparse_layers", "sparsify"]


@contextlib.contextmanager
def _beta_quiet() -> Iterator[None]:
    """torch warns that sparse CSR support is in beta; the outputs are checked against the dense
    layer by the tests, and by the deployment's agreement on every model it serves."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        yield


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out x in) stored as CSR buffers."""

    def __init__(self, in_features: int, out_features: int, nnz: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("crow_indices", torch.zeros(out_features + 1, dtype=torch.int64))
        self.register_buffer("col_indices", torch.zeros(nnz, dtype=torch.int64))
        self.register_buffer("values", torch.zeros(nnz))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._csr: tuple[tuple[int, ...], torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        with _beta_quiet():
            csr = linear.weight.detach().float().to_sparse_csr()
        layer = cls(
            linear.in_features, linear.out_features, int(csr.values().numel()), linear.bias is not None
        )
        layer.crow_indices.copy_(csr.crow_indices())
        layer.col_indices.copy_(csr.col_indices())
        layer.values.copy_(csr.values())
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        return layer

    def weight(self) -> torch.Tensor:
        """The dense weight (counting, export, tests)."""
        return self._matrix().to_dense()

    def _matrix(self) -> torch.Tensor:
        # one CSR view per buffer set: rebuilt after load_state_dict or .to() replace the buffers
        key = tuple(t.data_ptr() for t in (self.crow_indices, self.col_indices, self.values))
        if self._csr is None or self._csr[0] != key:
            with _beta_quiet():
                matrix = torch.sparse_csr_tensor(
                    self.crow_indices,
                    self.col_indices,
                    self.values,
                    (self.out_features, self.in_features),
                    check_invariants=False,
                )
            self._csr = (key, matrix)
        return self._csr[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        # (W @ x^T)^T: the CSR matrix on the left is the product MKL's sparse BLAS runs; a
        # row-major right operand measured ~1.4x faster than the transposed view of x
        columns = x.reshape(-1, self.in_features).t().contiguous()
        if self.bias is not None:
            out = torch.addmm(self.bias.unsqueeze(1), self._matrix(), columns)
        else:
            out = self._matrix() @ columns
        return out.t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        density = self.values.numel() / max(1, self.in_features * self.out_features)
        return f"in_features={self.in_features}, out_features={self.out_features}, density={density:.3f}"


@dataclass
class SparseCSRConfig(Config):
    """``min_sparsity``: a Linear layer is stored sparse when at least this share of its weights
    is zero (below about half, CSR's index overhead outweighs the saved products)."""

    min_sparsity: float = 0.5

    def __post_init__(self) -> None:
        check_range("min_sparsity", self.min_sparsity, 0.0, 1.0, high_open=True)


def _set(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    if not name:
        return module
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
    return model


def sparsify(model: nn.Module, cfg: SparseCSRConfig | None = None) -> tuple[nn.Module, dict[str, int]]:
    """``model`` (changed in place) with every float ``nn.Linear`` at least ``cfg.min_sparsity``
    sparse replaced by a :class:`SparseLinear`; and ``{layer name: non-zero count}``."""
    cfg = cfg or SparseCSRConfig()
    layers: dict[str, int] = {}
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.weight.dtype == torch.float32:
            nonzero = int(torch.count_nonzero(module.weight))
            if 1.0 - nonzero / module.weight.numel() >= cfg.min_sparsity:
                model = _set(model, name, SparseLinear.from_linear(module))
                layers[name] = nonzero
    return model, layers


def sparse_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, SparseLinear)]


def restore(model: nn.Module, cfg: Any, structure: dict[str, Any] | None) -> nn.Module:
    """Empty :class:`SparseLinear` layers of the recorded non-zero counts, for a state_dict to fill."""
    layers = (structure or {}).get("layers")
    if not isinstance(layers, dict):
        raise ConfigError("sparse_csr.structure", structure, "{layers: {layer name: non-zero count}}")
    for name, nnz in layers.items():
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ConfigError("sparse_csr.structure.layers", name, "a Linear layer of the model") from None
        if not isinstance(linear, nn.Linear):
            raise ConfigError(
                "sparse_csr.structure.layers", name, f"a Linear layer, not {type(linear).__name__}"
            )
        model = _set(
            model,
            name,
            SparseLinear(linear.in_features, linear.out_features, int(nnz), linear.bias is not None),
        )
    return model
