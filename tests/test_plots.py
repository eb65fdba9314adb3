"""Figures: they show every row and column they are given (plots only draw; the numbers are tested elsewhere)."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from minclip import plots  # noqa: E402


def test_plot_similarity_matrix_shows_every_image_column_and_caption_row():
    similarity = torch.linspace(-1, 1, 3 * 5).view(3, 5)  # (captions, images)
    images = torch.zeros(5, 8, 8, 3, dtype=torch.uint8)
    figure = plots.plot_similarity_matrix(similarity, images, ["a", "b", "c"])
    axis = figure.axes[0]
    assert axis.get_xlim() == (0, 5)  # the thumbnails drawn last must not shrink the view to the last column
    assert axis.get_ylim() == (3, -1)  # every caption row, plus the thumbnail strip above them
    assert [label.get_text() for label in axis.get_yticklabels()] == ["a", "b", "c"]
    assert len(axis.texts) == 15  # one printed value per cell
    plots.plt.close(figure)


def _history(evaluations: int) -> dict:
    steps = list(range(1, 21))
    return {"step": steps, "loss": [4.0 - 0.1 * s for s in steps], "temperature": [0.07 - 0.001 * s for s in steps],
            "lr": [1e-3] * 20,
            "val": [{"step": 5 * (i + 1), "text_to_image_R@1": 0.1 * (i + 1), "text_to_image_R@5": 0.2 * (i + 1),
                     "image_to_text_R@1": 0.15 * (i + 1), "image_to_text_R@5": 0.25 * (i + 1)}
                    for i in range(evaluations)]}


def _smallest_text_points(figure) -> float:
    figure.canvas.draw()  # tick labels exist only once drawn
    sizes = [text.get_fontsize() for text in figure.findobj(matplotlib.text.Text) if text.get_text().strip()]
    return min(sizes)


def test_training_curves_draw_validation_recall_per_evaluation_beside_the_loss():
    history = _history(evaluations=4)
    figure = plots.training_curves(history, title="a run")
    loss_axis, recall_axis, temperature_axis = figure.axes
    assert list(loss_axis.lines[0].get_xdata()) == history["step"]
    assert list(loss_axis.lines[0].get_ydata()) == history["loss"]
    curves = {line.get_label(): line for line in recall_axis.lines}
    assert set(curves) == {label for _, label, _ in plots.RECALL_CURVES}
    for key, label, _ in plots.RECALL_CURVES:  # one point per evaluation, at the step it was made
        assert list(curves[label].get_xdata()) == [5, 10, 15, 20]
        assert list(curves[label].get_ydata()) == [evaluation[key] for evaluation in history["val"]]
    assert recall_axis.get_ylim() == (0, 1)
    assert list(temperature_axis.lines[0].get_ydata()) == history["temperature"]
    plots.plt.close(figure)


def test_training_curves_without_evaluations_have_no_recall_panel():
    for history in (_history(evaluations=0), {k: v for k, v in _history(0).items() if k != "val"}):
        figure = plots.training_curves(history)
        assert len(figure.axes) == 2  # loss and temperature only: no empty panel
        plots.plt.close(figure)


def test_style_and_figures_are_legible():
    defaults = dict(plots.plt.rcParams)
    try:
        plots.use_style()
        assert plots.plt.rcParams["figure.dpi"] >= 100 and plots.plt.rcParams["savefig.dpi"] >= 100
        figure = plots.training_curves(_history(evaluations=3), title="a run")
        assert figure.dpi >= 100
        assert _smallest_text_points(figure) >= 9
        plots.plt.close(figure)
        figure = plots.plot_similarity_matrix(torch.rand(3, 4), torch.zeros(4, 8, 8, 3, dtype=torch.uint8), ["a", "b", "c"])
        assert _smallest_text_points(figure) >= 9
        plots.plt.close(figure)
        figure = plots.retrieval_gallery(["a query"], [torch.zeros(2, 8, 8, 3, dtype=torch.uint8)], [[0.5, 0.4]],
                                         correct=[[True, False]])
        assert _smallest_text_points(figure) >= 9
        plots.plt.close(figure)
    finally:
        plots.plt.rcParams.update(defaults)


def test_save_writes_a_png_at_the_style_resolution(tmp_path):
    figure = plots.training_curves(_history(evaluations=2))
    width_inches = figure.get_size_inches()[0]
    path = plots.save(figure, tmp_path / "curves.png")
    with path.open("rb") as file:
        header = file.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width_pixels = int.from_bytes(header[16:20], "big")
    assert width_pixels >= 0.9 * plots.DPI * width_inches * 0.9  # bbox_inches="tight" trims a little margin only
