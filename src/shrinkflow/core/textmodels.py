"""Transformer text classifiers: the built-in ``transformer_encoder`` and the adapter that runs a
Hugging Face ``...ForSequenceClassification`` model on shrinkflow's token-id batches.

Why the encoder is written here rather than taken from ``nn.TransformerEncoderLayer``: torch's
layer keeps the query, key and value projections in one packed ``in_proj_weight`` inside
``nn.MultiheadAttention`` (whose output projection is a class the int8 quantizers skip). Compression
needs each projection as its own ``nn.Linear``: head pruning removes rows of q/k/v and columns of
the output projection, FFN pruning removes rows of the first FFN Linear and columns of the second,
and int8 / low-rank / magnitude methods find ordinary Linear layers. Attention itself is
``F.scaled_dot_product_attention`` (fused kernels on CPU and GPU). Each attention block records its
head count and width, so a pruned model keeps working with fewer heads.

Inputs are (N, L) int64 token ids, 0 = padding (:mod:`shrinkflow.core.text`); the padding mask is
``ids != 0``, computed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import ConfigError, check_choice, check_range
from shrinkflow.core.text import PAD_ID, SPECIAL, UNK_ID

__all__ = [
    "Attention",
    "EncoderLayer",
    "HuggingFaceClassifier",
    "TransformerEncoder",
    "huggingface",
    "is_huggingface_class",
    "takes_tokens",
]

POOLING = ["cls", "mean"]


class Attention(nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value``/``output`` Linears;
    ``heads`` x ``head_dim`` is the projections' width (``heads`` shrinks when heads are pruned)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ConfigError("heads", heads, f"a divisor of d_model={d_model}")
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        inner = heads * self.head_dim
        self.query, self.key, self.value = (nn.Linear(d_model, inner) for _ in range(3))
        self.output = nn.Linear(inner, d_model)

    def attention_macs(self, x: torch.Tensor) -> int:
        """Multiply-accumulates of the scores (Q K^T) and the weighted values of one sample of
        ``x`` (N, L, d_model): 2 x L^2 x heads x head_dim (the projections count as Linears)."""
        length = int(x.shape[1])
        return 2 * length * length * self.heads * self.head_dim

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, self.head_dim).transpose(1, 2)

        # keep: (N, 1, 1, L) True where a key is a real token
        out = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=keep,
            # an exported graph keeps dropout_p as a constant that its train/eval switch cannot
            # reach (QAT captures in training mode): attention-probability dropout stays eager-only
            dropout_p=self.dropout if self.training and not torch.compiler.is_exporting() else 0.0,
        )
        return self.output(out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim))


class EncoderLayer(nn.Module):
    """Pre-norm block: ``x + attention(norm(x))``, then ``x + ffn(norm(x))`` (GELU FFN)."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = Attention(d_model, heads, dropout)
        self.ffn_in, self.ffn_out = nn.Linear(d_model, ffn), nn.Linear(ffn, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), keep))
        return x + self.drop(self.ffn_out(self.drop(F.gelu(self.ffn_in(self.norm2(x))))))


class TransformerEncoder(nn.Module):
    """Token + learned position embeddings, ``layers`` pre-norm encoder blocks, a final LayerNorm,
    ``cls`` (the first token, ``[CLS]``) or ``mean`` (over real tokens) pooling, a Linear head.
    ``input_shape`` is ``(max_length,)``; ``vocab_size`` must cover the tokenizer's ids."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        vocab_size: int,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 4,
        ffn: int = 256,
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ConfigError(
                "transformer_encoder input_shape", tuple(input_shape), "(max_length,): token-id sequences"
            )
        check_range("vocab_size", vocab_size, 2, 10_000_000, integer=True)
        check_range("d_model", d_model, 1, 100_000, integer=True)
        check_range("heads", heads, 1, 1024, integer=True)
        check_range("layers", layers, 0, 1024, integer=True)
        check_range("ffn", ffn, 1, 1_000_000, integer=True)
        check_range("dropout", dropout, 0.0, 1.0, high_open=True)
        check_choice("pooling", pooling, POOLING)
        self.max_length, self.pooling = int(input_shape[0]), pooling
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        self.position = nn.Embedding(self.max_length, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(EncoderLayer(d_model, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, num_classes)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        length = ids.shape[1]
        real = ids != PAD_ID
        keep = real[:, None, None, :]
        positions = torch.arange(length, device=ids.device)
        x = self.drop(self.embed(ids) * math.sqrt(self.embed.embedding_dim) + self.position(positions))
        for block in self.blocks:
            x = block(x, keep)
        x = self.norm(x)
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            weights = real.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.classifier(pooled)


class HuggingFaceClassifier(nn.Module):
    """A Hugging Face sequence classifier called the way shrinkflow calls models: token ids in
    (0 = padding), a logits tensor out. ``input_ids`` and ``attention_mask`` are what the model
    receives; ``.logits`` what is returned."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        return self.model(input_ids=ids, attention_mask=(ids != PAD_ID).long()).logits


def takes_tokens(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """Whether ``model`` reads (N, L) token ids: a 1-D input shape and an ``nn.Embedding`` inside
    (tables are 1-D too, but their models embed nothing)."""
    return len(input_shape) == 1 and any(isinstance(m, nn.Embedding) for m in model.modules())


def example_tokens(batch: int, length: int) -> torch.Tensor:
    """A token-id batch for tracing: ``[CLS]`` then ``[UNK]`` everywhere (no padding)."""
    ids = torch.full((batch, length), UNK_ID, dtype=torch.int64)
    ids[:, 0] = SPECIAL.index("[CLS]")
    return ids


def is_huggingface_class(factory: Any) -> bool:
    """A ``transformers`` model class (built from its config class, not called with kwargs)."""
    return (
        isinstance(factory, type) and hasattr(factory, "config_class") and hasattr(factory, "from_pretrained")
    )


def huggingface(
    input_shape: Sequence[int],
    num_classes: int,
    architecture: str | type,
    config: dict[str, Any] | None = None,
) -> HuggingFaceClassifier:
    """``transformers.<architecture>`` (e.g. ``BertForSequenceClassification``, or the class itself)
    built from its config class with ``config``, a dict of that config's fields (``vocab_size``
    at least: the tokenizer's); ``num_labels``, ``max_position_embeddings`` and ``pad_token_id``
    come from the data unless given. Nothing is downloaded (offline machines): pretrained weights
    load from a local state-dict file (``model.pretrained``)."""
    if isinstance(architecture, str):
        try:
            import transformers
        except ImportError as exc:
            raise ConfigError(
                "model", architecture, 'an installed transformers (pip install "shrinkflow[transformers]")'
            ) from exc
        cls = getattr(transformers, architecture, None)
    else:
        cls = architecture
    if not is_huggingface_class(cls):
        raise ConfigError(
            "model.kwargs.architecture",
            architecture,
            "a transformers model class, e.g. BertForSequenceClassification",
        )
    config = dict(config or {})
    if "vocab_size" not in config:
        raise ConfigError(
            "model.kwargs.config", config, "the tokenizer's vocab_size among the config's fields"
        )
    values = {
        "num_labels": int(num_classes),
        "max_position_embeddings": int(input_shape[0]),
        "pad_token_id": PAD_ID,
        **config,
    }
    try:
        model = cls(cls.config_class(**values))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            "model.kwargs.config", config, f"fields of {cls.config_class.__name__} ({exc})"
        ) from exc
    return HuggingFaceClassifier(model)


class Block:
    """One transformer layer as compression sees it: the module holding ``query``/``key``/``value``
    and the head count, the attention's output projection (its input is the heads side by side),
    and the FFN's two Linears. Covers the built-in encoder and BERT-style ``transformers`` layers
    (BERT, RoBERTa, ELECTRA...: ``attention.self``, ``attention.output.dense``,
    ``intermediate.dense``, ``output.dense``)."""

    def __init__(
        self,
        name: str,
        layer: nn.Module,
        attn: nn.Module,
        out: nn.Linear,
        ffn_in: nn.Linear,
        ffn_out: nn.Linear,
    ) -> None:
        self.name, self.layer, self.attn, self.out = name, layer, attn, out
        self.ffn_in, self.ffn_out = ffn_in, ffn_out
        self.head_dim = int(getattr(attn, "head_dim", getattr(attn, "attention_head_size", 0)))

    @property
    def heads(self) -> int:
        return int(self.attn.query.out_features // self.head_dim)

    def set_heads(self, heads: int) -> None:
        """Record a new head count where the attention module reads it."""
        if hasattr(self.attn, "num_attention_heads"):  # transformers
            self.attn.num_attention_heads = heads
            self.attn.all_head_size = heads * self.head_dim
        else:
            self.attn.heads = heads

    @property
    def projections(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        return self.attn.query, self.attn.key, self.attn.value


def _bert_block(name: str, layer: nn.Module) -> Block | None:
    attention = getattr(layer, "attention", None)
    attn = getattr(attention, "self", None)
    out = getattr(getattr(attention, "output", None), "dense", None)
    ffn_in = getattr(getattr(layer, "intermediate", None), "dense", None)
    ffn_out = getattr(getattr(layer, "output", None), "dense", None)
    parts = (getattr(attn, "query", None), out, ffn_in, ffn_out)
    if (
        attn is None
        or not hasattr(attn, "attention_head_size")
        or not all(isinstance(p, nn.Linear) for p in parts)
    ):
        return None
    return Block(name, layer, attn, out, ffn_in, ffn_out)  # type: ignore[arg-type]


def encoder_blocks(model: nn.Module) -> list[Block]:
    """The model's transformer layers in order ([] for a model without any)."""
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, EncoderLayer):
            blocks.append(
                Block(name, module, module.attention, module.attention.output, module.ffn_in, module.ffn_out)
            )
        elif (block := _bert_block(name, module)) is not None:
            blocks.append(block)
    return blocks


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(name, ModuleList) of the list holding the model's transformer layers, if they share one."""
    layers = {id(b.layer) for b in encoder_blocks(model)}
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(id(m) in layers for m in module):
            return name, module
    return None
