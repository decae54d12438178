"""PluginDataset: raw data from a data-set plugin by name, tables included."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from shrinkflow import plugins
from shrinkflow.core import tables
from shrinkflow.core.data import modality
from shrinkflow.io import PluginDataset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_the_table_plugin_is_declared_as_an_entry_point():
    # the installed registry lists it once the package is (re)installed from this pyproject
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["shrinkflow.datasets"]["table"] == "shrinkflow.core.tables:table"
    assert plugins.load_object(declared["shrinkflow.datasets"]["table"]) is tables.table


def test_npz_table_rows_load_through_the_catalog_dataset(tmp_path: Path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) * 100
    np.savez(tmp_path / "rows.npz", x=x, y=np.array([0, 1, 0, 1]))
    raw = PluginDataset("npz", {"path": str(tmp_path / "rows.npz")}).load()
    assert modality(raw.data) == "table" and tuple(raw.data.item(0).shape) == (3,)
    assert raw.data.x.tolist() == x.tolist()
    # the plugin and options rebuild the source when a stored split is loaded
    assert raw.origin == {"plugin": "npz", "options": {"path": str(tmp_path / "rows.npz")}}
