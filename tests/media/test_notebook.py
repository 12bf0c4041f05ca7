"""The quickstart notebook runs headless, offline, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_quickstart_notebook_executes(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # Run in a scratch folder, so the notebook's outputs do not land in the source tree.
    for name in ("quickstart.ipynb", "sample_en.flac"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    nb = nbformat.read(tmp_path / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=110, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert (tmp_path / "out" / "sample_dubbed.wav").stat().st_size > 0
    assert (tmp_path / "out" / "sample_dubbed.en.srt").exists()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert html.count("<audio") >= 3  # the dubbed file, the original, one fragment
    assert "platform" in html  # the transcript is shown
