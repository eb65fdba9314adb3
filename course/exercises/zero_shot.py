"""Exercise: zero-shot classification (lesson 08, notebooks/08_zero_shot_and_retrieval.ipynb).

CLIP was never trained to classify, yet it can: write each class name into captions ("a photo of a cat."), encode
them, and give an image the class whose caption it matches best. Several templates per class, averaged, make a
sturdier class vector than one (the prompt ensemble of the CLIP paper, section 3.1.4).

Grade your work with ``python -m course check zero_shot``. The reference is ``minclip/evaluate.py``
(``zero_shot_classifier``, ``average_templates``, ``zero_shot_evaluate``).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def build_classifier(encode_texts: Callable[[list[str]], torch.Tensor], classnames: list[str],
                     templates: list[str]) -> torch.Tensor:
    """One unit vector per class from a prompt ensemble: ``(C, D)``.

    Args:
        encode_texts: the text tower: a list of ``N`` strings -> raw (not normalised) features ``(N, D)``. Call it
            once, with every caption: a real model encodes a batch far faster than one text at a time.
        classnames: ``C`` class names, e.g. ``["cat", "dog"]``.
        templates: ``T`` strings with one ``{}`` where the class name goes, e.g. ``["a photo of a {}.", "a {}"]``.

    Returns:
        ``(C, D)``: row ``c`` is ``normalise(mean over t of normalise(features of templates[t] filled with
        classnames[c])))``.

    Why normalise twice: normalising each caption first gives every template an equal say, whatever the lengths of
    their raw features; the mean of unit vectors is shorter than 1, so normalise again to get cosines later.

    Hint: ``captions = [template.format(name) for name in classnames for template in templates]`` (class-major), one
    ``encode_texts`` call, ``.view(C, T, D)``, then ``F.normalize(..., dim=-1)``, ``.mean(dim=1)``,
    ``F.normalize``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("build_classifier: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def zero_shot_predict(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The predicted class of every image: ``(N, D)`` image features, ``(C, D)`` unit class vectors -> ``(N,)`` long.

    An image gets the class with the highest cosine similarity to it.

    Hint: ``(image_features @ classifier.T).argmax(dim=1)``. Normalising the image features does not change the
    answer (it scales each row of scores by a positive number), but it makes the scores cosines, which you will want
    when you print them.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("zero_shot_predict: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
