"""examples/tutorial.ipynb runs end to end in a Jupyter kernel (small sizes, Keras on torch)."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
# The notebook's kernel imports Keras; this process need not (a TensorFlow import saved).
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None, reason="keras is not installed"
)

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "tutorial.ipynb"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_tutorial_notebook_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    parameters[0].source = "NUM_CLIENTS = 3\nNUM_IMAGES = 600\nNUM_ROUNDS = 2\n"
    (tmp_path / "data").mkdir()
    # The kernel inherits this environment: torch backend, one thread, no real CIFAR-10.
    for name, value in {
        "KERAS_BACKEND": "torch",
        "OMP_NUM_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "ROOST_DATA": str(tmp_path / "data"),
        "HOME": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "",
    }.items():
        monkeypatch.setenv(name, value)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    def text_of(cell) -> str:
        return "".join(output.get("text", "") for output in cell.get("outputs", []))

    outputs = "\n".join(text_of(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert "on torch" in outputs
    assert "NOTICE: CIFAR-10 is not on disk" in outputs
    assert "accuracy: [(1, " in outputs and "(2, " in outputs
    # The label-count table has a row per client and all 600 images.
    assert (
        sum(
            int(line.split()[-1])
            for line in outputs.splitlines()
            if line.strip()[:1].isdigit() and len(line.split()) == 12
        )
        == 600
    )
    # The last cell displays the chart as a PNG image.
    images = [
        output["data"]["image/png"]
        for output in notebook.cells[-2].outputs
        if "image/png" in output.get("data", {})
    ]
    assert images and len(base64.b64decode(images[0])) > 20_000
