"""Text data: TSV reading, the tokenizer trained on the training file, token-id batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import DataError, modality, split_data
from shrinkflow.core.text import PAD_ID, TokenizerConfig, read_tsv, text_tsv

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "film", "plot", "the", "a", "'s", "n't"]


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


def corpus(n: int, seed: int) -> list[tuple[str, int]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        label = int(torch.randint(0, 2, (1,), generator=g))
        mood = WORDS[:3] if label else WORDS[3:6]
        # the mood word (always there) decides the label; filler words around it
        words = [mood[int(torch.randint(0, 3, (1,), generator=g))], *WORDS[6:]]
        keep = [
            0,
            *(
                1 + torch.randperm(len(words) - 1, generator=g)[: int(torch.randint(1, 5, (1,), generator=g))]
            ).tolist(),
        ]
        # a number unique to the file and line: no text repeats across files (the split suite's leakage check)
        rows.append((" ".join(words[int(i)] for i in sorted(keep)) + f' " {seed}{len(rows):04d}', label))
    return rows


@pytest.fixture()
def sst_like(tmp_path: Path) -> dict[str, str]:
    return {
        "train": str(write_tsv(tmp_path / "train.tsv", corpus(300, 0))),
        "val": str(write_tsv(tmp_path / "dev.tsv", corpus(40, 1))),
        "test": str(write_tsv(tmp_path / "test.tsv", corpus(50, 2))),
    }


def test_fixed_dev_and_test_files_become_the_val_and_test_splits(sst_like):
    raw = text_tsv(**sst_like, tokenizer={"vocab_size": 200, "max_length": 6})
    train, val, test = split_data(raw, 0.1, 0.1, seed=0)
    assert (len(train), len(val), len(test)) == (300, 40, 50)  # the whole training file trains
    assert modality(train) == "text" and train.input_shape == (6,)
    x, y = train.take([0, 1, 2, 3])
    assert x.dtype == torch.int64 and x.shape[0] == 4 and x.shape[1] <= 6
    assert (x[:, 0] == 2).all()  # [CLS] first
    lengths = (x != PAD_ID).sum(1)
    assert x.shape[1] == int(lengths.max())  # padded to the batch's longest, not to max_length
    assert y.tolist() == [
        int(r.split("\t")[1]) for r in Path(sst_like["train"]).read_text().splitlines()[1:5]
    ]


def test_the_kept_tokenizer_is_reused_and_retrained_only_for_other_options(sst_like, tmp_path):
    kept = tmp_path / "features" / "tokenizer.json"
    first = text_tsv(**sst_like, tokenizer={"vocab_size": 200}, tokenizer_file=str(kept))
    stored = json.loads(kept.read_text())
    assert stored["options"]["vocab_size"] == 200 and stored["tokenizer"] == first.data.tokenizer_json
    again = text_tsv(**sst_like, tokenizer={"vocab_size": 200}, tokenizer_file=str(kept))
    assert again.data.fingerprint() == first.data.fingerprint()  # same ids: a rebuilt split matches
    assert torch.equal(again.data.batch(torch.arange(300)), first.data.batch(torch.arange(300)))
    other = text_tsv(**sst_like, tokenizer={"vocab_size": 120}, tokenizer_file=str(kept))
    assert json.loads(kept.read_text())["options"]["vocab_size"] == 120 and other.data.vocab_size <= 120
    assert sorted(p.name for p in kept.parent.iterdir()) == ["tokenizer.json"]  # no temporary file left
    # trained on the training file only: a word only in the test file is not a token
    write_tsv(Path(sst_like["test"]), [("zyzzyva", 1), ("good film", 0)])
    raw = text_tsv(**sst_like, tokenizer={"vocab_size": 200})
    assert '"zyzzyva"' not in raw.data.tokenizer_json
    kept.write_text("{not json")
    with pytest.raises(DataError, match="not a tokenizer this data set wrote"):
        text_tsv(**sst_like, tokenizer_file=str(kept))


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_both_tokenizer_kinds_cover_the_text(sst_like, kind):
    raw = text_tsv(**sst_like, tokenizer={"kind": kind, "vocab_size": 300})
    ids = raw.data.batch(torch.arange(len(raw.data)))
    assert int(ids.max()) < raw.data.vocab_size <= 300
    assert (ids != PAD_ID).sum(1).min() >= 2  # [CLS] and at least one token


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence\tlabel\n\t1\n", r"train.tsv:2: empty text"),
        ("sentence\tlabel\ngood\t1\textra\n", r"train.tsv:2: 3 fields; expected 2"),
        ("text\tlabel\ngood\t1\n", r"no column \['sentence'\]"),
        ("", r"empty file"),
        ("sentence\tlabel\n", r"a header and no rows"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, content, message):
    (tmp_path / "train.tsv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_tsv(tmp_path / "train.tsv", "sentence", "label")


def test_labels_outside_the_class_set_and_out_of_range_options_fail_clearly(sst_like, tmp_path):
    write_tsv(Path(sst_like["val"]), [("good", 1), ("bad", 7)])
    with pytest.raises(DataError, match=r"dev.tsv: labels \['7'\] are not in the class set \['0', '1'\]"):
        text_tsv(**sst_like)
    with pytest.raises(ConfigError, match="vocab_size"):
        TokenizerConfig(vocab_size=3)
    with pytest.raises(ConfigError, match="kind"):
        text_tsv(**sst_like, tokenizer={"kind": "sentencepiece"})
    with pytest.raises(DataError, match="no such file"):
        text_tsv(str(tmp_path / "missing.tsv"))


def test_shuffled_text_batches_group_similar_lengths_and_cover_the_split_once(sst_like):
    raw = text_tsv(**sst_like, tokenizer={"vocab_size": 200})
    train, _, _ = split_data(raw, 0.1, 0.1, seed=0)
    batches = train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0))
    epochs = [list(batches), list(batches)]
    for epoch in epochs:
        assert sum(len(y) for _, y in epoch) == len(train)
    padded = sum(int((x == PAD_ID).sum()) for x, _ in epochs[0]) / sum(x.numel() for x, _ in epochs[0])
    plain = [train.take(torch.arange(i, min(i + 16, len(train))))[0] for i in range(0, len(train), 16)]
    unsorted = sum(int((x == PAD_ID).sum()) for x in plain) / sum(x.numel() for x in plain)
    assert padded < unsorted / 2
    assert [y.tolist() for _, y in epochs[0]] != [y.tolist() for _, y in epochs[1]]  # a new order each epoch
    again = train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(list(again), epochs[0], strict=True))


def test_the_text_suite_frame_and_the_split_summary_of_fixed_dev_and_test_files(sst_like):
    from shrinkflow.validation.frames import split_summary, text_stats

    raw = text_tsv(**sst_like, tokenizer={"vocab_size": 200, "max_length": 5})
    frame = text_stats(raw)
    assert list(frame["part"].unique()) == ["data", "val", "test"] and len(frame) == 390
    assert frame["tokens"].min() >= 1 and set(frame["truncated"]) <= {0, 1}
    assert frame["truncated"].mean() > 0.05  # max_length 5 cuts many of these texts: the suite flags it
    train, val, test = split_data(raw, 0.1, 0.1, seed=0)
    summary = split_summary(
        train, val, test, val_fraction=0.1, test_fraction=0.1, fixed_test=True, fixed_val=True
    ).set_index("split")
    assert summary.loc["train", "share"] == 1.0 and summary.loc["train", "expected_share"] == 1.0
    assert summary[["expected_share"]].loc[["val", "test"]].isna().all().all()
