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
