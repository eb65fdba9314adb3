"""Exercise: retrieval recall@K (lesson 08, notebooks/08_zero_shot_and_retrieval.ipynb).

CLIP never writes a caption; it ranks. Image search ranks all images for a caption; caption ranking ranks all
captions for an image. Recall@K asks how often the right answer is among the top K. It is the metric of the
Flickr30k and COCO retrieval benchmarks, and of lesson 08.

Grade your work with ``python -m course check recall``. The reference is ``minclip/evaluate.py``
(``retrieval_recall``).

Both functions take the same inputs:

* ``similarity``: ``(n_captions, n_images)``, the score of every caption with every image (cosine similarities);
* ``caption_to_image``: ``(n_captions,)`` long, the index of the image each caption describes. An image may have
  several captions, or none;
* ``k``: a positive int.

and return a Python float in ``[0, 1]``.

**Ties count against the model.** The rank of the right answer is the number of wrong candidates scoring *at least*
as high as it (``>=``, not ``>``); a hit at K means rank ``< K``. A model that gives every pair the same score
(a collapsed model) must score 0, not 100 %.

Worked example (3 images; captions 0 and 1 describe image 0, caption 2 image 1, caption 3 image 2)::

    similarity = [[0.9, 0.1, 0.0],      caption 0: image 0 first                      -> hit at K=1
                  [0.2, 0.5, 0.1],      caption 1: image 1 beats image 0              -> miss at 1, hit at 2
                  [0.3, 0.3, 0.0],      caption 2: image 0 ties with its image 1      -> miss at 1, hit at 2
                  [0.1, 0.0, 0.4]]      caption 3: image 2 first                      -> hit at K=1
    text_to_image_recall: K=1 -> 2/4 = 0.5, K=2 -> 1.0

    image 0: its best caption scores 0.9, no other caption reaches it               -> hit at K=1
    image 1: its caption 2 scores 0.3, caption 1 (of image 0) scores 0.5            -> miss at 1, hit at 2
    image 2: its caption 3 scores 0.4, the best of its column                      -> hit at K=1
    image_to_text_recall: K=1 -> 2/3, K=2 -> 1.0
"""

import torch


def text_to_image_recall(similarity: torch.Tensor, caption_to_image: torch.Tensor, k: int) -> float:
    """Image search: the share of captions whose image is among the ``k`` best-scoring images.

    Hint, without a Python loop: ``right = similarity[torch.arange(n_captions), caption_to_image]`` is
    ``(n_captions,)``; ``(similarity >= right[:, None]).sum(dim=1) - 1`` counts the other images scoring at least as
    high (the ``- 1`` removes the right image itself).
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("text_to_image_recall: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def image_to_text_recall(similarity: torch.Tensor, caption_to_image: torch.Tensor, k: int) -> float:
    """Caption ranking: the share of images (those with at least one caption) that have one of their captions among
    the ``k`` best-scoring captions.

    Hint: build ``belongs = caption_to_image[:, None] == torch.arange(n_images)``, ``(n_captions, n_images)``, True
    where a caption describes an image. For image ``i``, its best caption's score is the max of column ``i`` over
    the captions that belong to it (``masked_fill`` the others with ``-inf``); its rank is the number of captions that
    do *not* belong to it and score at least that much. Images with no caption (``belongs.any(dim=0)`` is False)
    are not queries.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("image_to_text_recall: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
