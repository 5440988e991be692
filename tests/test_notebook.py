"""notebooks/ensembles.ipynb runs top to bottom in a real Jupyter kernel (issue 16, part 2)."""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra: pip install -e '.[notebook]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra: pip install -e '.[notebook]'")

ROOT = Path(__file__).resolve().parents[1]


def test_ensembles_notebook_executes(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "ensembles.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "trained 160 members" in text and "K=  16 (best)" in text
    assert (tmp_path / "ensembles.png").stat().st_size > 10_000
