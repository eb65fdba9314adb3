"""The drawn diagrams: each returns a figure that draws, at 100 dpi or more with no text under 9 points, the same
picture on every call, and refuses sizes it cannot draw legibly; the module imports nothing but matplotlib and numpy.
"""

import ast
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from minclip import diagrams  # noqa: E402

DIAGRAMS = {
    "clip_overview": lambda: diagrams.clip_overview(),
    "clip_overview_B2": lambda: diagrams.clip_overview(batch_size=2),
    "vit_pipeline": lambda: diagrams.vit_pipeline(),
    "vit_pipeline_2x2": lambda: diagrams.vit_pipeline(np.zeros((32, 32, 3), dtype=np.uint8), patch_size=16),
    "pre_ln_block": lambda: diagrams.pre_ln_block(),
    "causal_mask_diagram": lambda: diagrams.causal_mask_diagram(),
}


def drawn_texts(figure) -> list[Text]:
    """Every text that appears on the drawn figure (tick labels of hidden axes are not drawn, so not counted)."""
    figure.canvas.draw()
    return [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()]


@pytest.mark.parametrize("name", DIAGRAMS)
def test_each_diagram_draws_legibly(name):
    figure = DIAGRAMS[name]()
    try:
        assert isinstance(figure, Figure)
        assert figure.dpi >= 100
        texts = drawn_texts(figure)
        assert len(texts) >= 5, "a diagram explains itself in words"
        small = [(text.get_text(), text.get_fontsize()) for text in texts if text.get_fontsize() < 9]
        assert not small, f"text under 9 points: {small}"
    finally:
        plt.close(figure)


def pixels(figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="rgba", dpi=figure.dpi)
    plt.close(figure)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


@pytest.mark.parametrize("name", ["clip_overview", "causal_mask_diagram"])
def test_a_diagram_is_the_same_picture_on_every_call(name):
    assert np.array_equal(pixels(DIAGRAMS[name]()), pixels(DIAGRAMS[name]()))


def test_the_overview_marks_the_diagonal_as_positives():
    figure = diagrams.clip_overview(batch_size=3)
    cells = [patch for patch in figure.axes[0].patches if isinstance(patch, matplotlib.patches.Rectangle)
             and patch.get_width() == pytest.approx(5.0 / 3)]
    plt.close(figure)
    assert len(cells) == 9
    colours = [matplotlib.colors.to_hex(cell.get_facecolor()) for cell in cells]  # row by row
    assert [colour == diagrams.POSITIVE_COLOUR for colour in colours] == [i == j for i in range(3) for j in range(3)]


def test_the_causal_mask_allows_exactly_the_keys_up_to_the_query():
    tokens = ["SOT", "red", "heart", "EOT"]
    figure = diagrams.causal_mask_diagram(tokens)
    axis = figure.axes[0]
    cells = {(int(text.get_position()[1]), int(text.get_position()[0])): text.get_text() for text in axis.texts
             if text.get_text() in ("0", "−∞")}                             # (query, key) -> the mask's value
    plt.close(figure)
    assert cells == {(q, k): "0" if k <= q else "−∞" for q in range(4) for k in range(4)}


@pytest.mark.parametrize("call, message", [
    (lambda: diagrams.clip_overview(batch_size=1), "batch_size must be between 2 and 5"),
    (lambda: diagrams.clip_overview(batch_size=9), "got 9"),
    (lambda: diagrams.vit_pipeline(np.zeros((64, 48, 3), dtype=np.uint8)), "square (H, W, 3)"),
    (lambda: diagrams.vit_pipeline(np.zeros((64, 64, 3), dtype=np.uint8), patch_size=8), "at most 4 x 4 patches"),
    (lambda: diagrams.vit_pipeline(np.zeros((64, 64, 3), dtype=np.uint8), patch_size=24), "got 24"),
    (lambda: diagrams.causal_mask_diagram(["a", "b"]), "4 to 12 labels"),
])
def test_sizes_a_diagram_cannot_draw_legibly_are_refused(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_the_module_imports_only_matplotlib_and_numpy():
    tree = ast.parse((Path(diagrams.__file__)).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "collections", "matplotlib", "numpy"}, imported
