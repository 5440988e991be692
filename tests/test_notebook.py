"""notebooks/ensembles.ipynb runs top to bottom in a real Jupyter kernel (issue 16, part 2): on the sweep it
trains itself, and on a depth-study results directory (another study's dims)."""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra: pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra: pip install -e '.[notebook]'")

ROOT = Path(__file__).resolve().parents[1]


def execute(tmp_path: Path, results_dir: str | None = None):
    nb = nbformat.read(ROOT / "notebooks" / "ensembles.ipynb", as_version=4)
    if results_dir:
        cell = next(c for c in nb.cells if "RESULTS_DIR = None" in c.source)
        cell.source = cell.source.replace("RESULTS_DIR = None", f"RESULTS_DIR = {results_dir!r}")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    explore = [o for o in nb.cells[-1].get("outputs", []) if "image/png" in o.get("data", {})]
    assert explore, "the explore cell drew no figure"
    assert (tmp_path / "ensembles.png").stat().st_size > 10_000
    return text


def test_ensembles_notebook_trains_and_explores(tmp_path):
    text = execute(tmp_path)
    assert "trained 160 members" in text and "size dim: width" in text and "K=  16 (best)" in text


def test_ensembles_notebook_on_depth_study_results(tmp_path):
    """Another study's dims (depth, no width) and members that combine by probabilities (KL students: a class dim)."""
    from sweepjax.run import run
    out = tmp_path / "depth"
    run({"task": {"name": "teacher", "target": "kl", "n_classes": 5, "teacher_depth": 4, "teacher_width": 8,
                  "teacher_hidden": 16, "batch_size": 32, "test_size": 64, "data_seed": 0},
         "model": {"residual": True, "width": 8, "mlp_ratio": 2, "activation": "relu2", "norm": "rmsnorm",
                   "input": "none", "zero_init": ["proj"]},
         "train": {"steps": 20, "chunk_steps": 20}, "eval": {"points": 2, "save_predictions": True},
         "run": {"figures": False, "bootstrap": 0},
         "sweep": {"model.depth": [1, 2, 4], "seed": [0, 1, 2, 3]}}, out=out, progress=False)
    text = execute(tmp_path, str(out))
    assert "size dim: depth" in text and "(best)" in text
