"""Text classification data: tab-separated files, a tokenizer trained on the training split, and
token-id batches padded to each batch's own length.

The input contract for text: a batch is an (N, L) int64 tensor of token ids, ``0`` = padding, ``L``
the longest sequence of *that* batch (at most ``max_length``). The attention mask is ``ids != 0``:
a classifier never needs another one, so the mask is computed by the model
(:class:`shrinkflow.core.textmodels.TransformerEncoder`, or the adapter that calls a Hugging Face
model with ``input_ids`` and ``attention_mask``) instead of travelling beside the ids. One tensor
keeps every part that moves batches (slicing, devices, DataLoader workers, ONNX export with one
input whose batch and sequence axes are dynamic, ONNX Runtime) the same as for images and tables.

The tokenizer (Hugging Face ``tokenizers``: WordPiece or byte-level BPE) is trained on the training
file only, never on dev or test, and kept as a file (``tokenizer_file``, tracked by DVC) that later
loads reuse, so a split rebuilt in another process (``origin``) tokenizes the same way: the trainers
are not deterministic across processes (:func:`tokenizer_for`). A source's fingerprint includes the
tokenizer, so a stored split refuses ids from another one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.data import DataError, RawData, Source

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "TextSource",
    "TokenizerConfig",
    "read_tsv",
    "text_tsv",
    "tokenizer_for",
    "train_tokenizer",
]
log = logging.getLogger(__name__)

#: the ids of ``[PAD]`` and ``[UNK]`` (``[CLS]``, ``[SEP]`` follow) in every tokenizer trained here
PAD_ID, UNK_ID = 0, 1
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
KINDS = ["wordpiece", "bpe"]


@dataclass
class TokenizerConfig(Config):
    """``kind``: ``wordpiece`` (BERT's subwords) or ``bpe`` (byte-level, no unknown tokens).
    ``vocab_size`` tokens at most, each seen ``min_frequency`` times in the training texts;
    sequences are ``[CLS]`` + tokens, cut at ``max_length``."""

    kind: str = "wordpiece"
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    max_length: int = 64

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_range("vocab_size", self.vocab_size, len(SPECIAL) + 1, 1_000_000, integer=True)
        check_range("min_frequency", self.min_frequency, 1, 1_000_000, integer=True)
        check_range("max_length", self.max_length, 2, 100_000, integer=True)
        if not isinstance(self.lowercase, bool):
            raise ConfigError("lowercase", self.lowercase, "true or false")


def read_tsv(path: str | Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """(texts, raw labels) of a tab-separated file with a header line; quote characters are text
    (``csv.QUOTE_NONE``). DataError naming the file and line for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected a tab-separated file with a header line")
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(rows)
        except StopIteration:
            raise DataError(
                f"{path}: empty file; expected a header line naming {text_column!r} and {label_column!r}"
            ) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise DataError(
                f"{path}: header {header} has no column {missing}; expected {text_column!r} and {label_column!r}"
            )
        t, y = header.index(text_column), header.index(label_column)
        try:
            for line, row in enumerate(rows, start=2):
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{line}: {len(row)} fields; expected {len(header)} as in the header"
                    )
                if not row[t].strip():
                    raise DataError(f"{path}:{line}: empty text; expected at least one token")
                texts.append(row[t])
                labels.append(row[y].strip())
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not texts:
        raise DataError(f"{path}: a header and no rows; expected at least one example")
    return texts, labels


def train_tokenizer(texts: Sequence[str], cfg: TokenizerConfig) -> Any:
    """A ``tokenizers.Tokenizer`` trained on ``texts``: ``[CLS]`` prepended, cut at ``max_length``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if cfg.lowercase else [])
    if cfg.kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer: Any = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=SPECIAL
        )
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=SPECIAL,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls = tokenizer.token_to_id("[CLS]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", cls)]
    )
    tokenizer.enable_truncation(cfg.max_length)
    return tokenizer


def tokenizer_for(texts: Sequence[str], cfg: TokenizerConfig, path: str | Path | None) -> Any:
    """The tokenizer kept at ``path`` when it was trained with ``cfg`` on these ``texts``; else one
    trained now and written there (atomically: a reader never sees half a file).

    Why kept, not retrained: tokenizers' trainers break ties between equally frequent merges in
    hash-map order, which differs between processes (measured on SST-2: WordPiece gave a different
    vocabulary in each of three runs). A split rebuilt in another process, and every model trained
    on its ids, must see the same ids, so the tokenizer is an artifact (DVC tracks the file)."""
    from tokenizers import Tokenizer

    from shrinkflow.core.artifact import atomic_write  # artifact -> models -> textmodels -> this module

    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    key = digest.hexdigest()
    if path is not None:
        path = Path(path)
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("trained_on") == key:
                    return Tokenizer.from_str(stored["tokenizer"])
                log.info("%s was trained with other options or texts: training the tokenizer again", path)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DataError(
                    f"{path}: not a tokenizer this data set wrote ({type(exc).__name__}: {str(exc)[:120]}); "
                    "delete it to train the tokenizer again"
                ) from None
    model = train_tokenizer(texts, cfg)
    if path is not None:
        document = {"trained_on": key, "options": cfg.to_dict(), "tokenizer": model.to_str()}
        atomic_write(path, json.dumps(document).encode())
    return model


class TextSource(Source):
    """Tokenized texts held as one flat id tensor with offsets (no padding stored); labels (N,).
    :meth:`batch` pads to the batch's longest sequence."""

    modality = "text"

    def __init__(
        self,
        ids: list[list[int]],
        labels: torch.Tensor,
        num_classes: int,
        max_length: int,
        vocab_size: int,
        tokenizer_json: str,
    ) -> None:
        lengths = torch.tensor([len(s) for s in ids], dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        self.ids = torch.tensor([t for s in ids for t in s], dtype=torch.int32)
        self.labels, self.num_classes = labels, int(num_classes)
        self.max_length, self.vocab_size = int(max_length), int(vocab_size)
        self.tokenizer_json = tokenizer_json

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What a model is built for: sequences of up to ``max_length`` tokens."""
        return (self.max_length,)

    def lengths(self, indices: torch.Tensor) -> torch.Tensor:
        return self.offsets[indices + 1] - self.offsets[indices]

    def item(self, index: int) -> torch.Tensor:
        return self.ids[self.offsets[index] : self.offsets[index + 1]].long()

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        lengths = self.lengths(indices)
        width = int(lengths.max()) if len(indices) else 1
        steps = torch.arange(width)
        real = steps.unsqueeze(0) < lengths.unsqueeze(1)
        out = torch.full((len(indices), width), PAD_ID, dtype=torch.int64)
        positions = self.offsets[indices].unsqueeze(1) + steps.unsqueeze(0)
        out[real] = self.ids[positions[real]].long()
        return out

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.tokenizer_json.encode())
        digest.update(self.offsets.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        return [self.item(int(i)).numpy().tobytes() for i in indices]


def _labels(raw: list[str], classes: list[str], path: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in raw if v not in index})
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not in the class set {classes}")
    return torch.tensor([index[v] for v in raw], dtype=torch.int64)


def text_tsv(
    train: str,
    test: str | None = None,
    val: str | None = None,
    text_column: str = "sentence",
    label_column: str = "label",
    classes: list[str] | None = None,
    tokenizer: dict[str, Any] | None = None,
    tokenizer_file: str | None = None,
) -> RawData:
    """Tab-separated text classification (SST-2's GLUE files: ``sentence<TAB>label``).

    ``train`` is the pool the tokenizer is trained on; ``val`` (e.g. SST-2 dev) is a fixed
    validation set, otherwise one is carved from the pool; ``test`` a fixed test set. ``classes``:
    the label values in class order (default: the sorted values found in ``train``).
    ``tokenizer_file``: where the trained tokenizer is kept (:func:`tokenizer_for`); without it the
    tokenizer is trained on every load."""
    cfg = TokenizerConfig.from_dict(tokenizer or {}, key="data.options.tokenizer")
    texts, raw = read_tsv(train, text_column, label_column)
    classes = [str(c) for c in classes] if classes is not None else sorted(set(raw), key=_label_order)
    if len(classes) < 2:
        raise DataError(f"{train}: one label value {classes}; expected at least two classes")
    model = tokenizer_for(texts, cfg, tokenizer_file)
    vocab_size = model.get_vocab_size()
    tokenizer_json = model.to_str()

    def source(path: str, texts: list[str], raw: list[str]) -> TextSource:
        ids = [e.ids for e in model.encode_batch(texts)]
        return TextSource(
            ids, _labels(raw, classes, path), len(classes), cfg.max_length, vocab_size, tokenizer_json
        )

    pool = source(train, texts, raw)
    fixed = {}
    for part, path in (("val", val), ("test", test)):
        if path is not None:
            fixed[part] = source(path, *read_tsv(path, text_column, label_column))
    return RawData(
        name=Path(train).parent.name or "text", data=pool, test=fixed.get("test"), val=fixed.get("val")
    )


def _label_order(value: str) -> tuple[int, Any]:
    """Numeric labels in numeric order (``2`` before ``10``), others after, alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
