"""Exercise: the byte-pair-encoding training loop (lesson 02, notebooks/02_tokenizer.ipynb).

BPE learns a vocabulary from text by repetition: count every pair of adjacent symbols in the corpus, merge the most
frequent pair into one new symbol everywhere, and do it again. The list of merges, in the order learned, *is* the
tokenizer: encoding a new word replays them.

Grade your work with ``python -m course check bpe``. The reference is ``minclip/tokenizer.py`` (``merge_pair`` and
``BPETokenizer.train``, which gets the same merges faster by updating the counts instead of recounting).

The corpus arrives as ``word_counts``: a dict from a word, written as a tuple of symbols, to how many times it
occurs. The grader builds it the way CLIP does: text is cleaned and cut into words, each word becomes one symbol per
UTF-8 byte (so any language and any emoji work), and the last symbol carries the end-of-word marker ``"</w>"``::

    {("l", "o", "w</w>"): 5, ("l", "o", "w", "e", "r</w>"): 2, ("n", "e", "w", "e", "s", "t</w>"): 6, ...}

Symbols are plain strings: nothing in your code needs to know about bytes.
"""


def count_pairs(word_counts: dict[tuple[str, ...], int]) -> dict[tuple[str, str], int]:
    """How often each pair of adjacent symbols occurs in the corpus.

    Every adjacent position of every word counts once, weighted by the word's count; pairs overlap (the word
    ``("a", "a", "a")`` holds ``("a", "a")`` twice). Pairs never span two words.

    Example::

        >>> count_pairs({("l", "o", "w</w>"): 5, ("l", "o", "w", "e", "r</w>"): 2})
        {('l', 'o'): 7, ('o', 'w</w>'): 5, ('o', 'w'): 2, ('w', 'e'): 2, ('e', 'r</w>'): 2}

    Hint: ``zip(symbols, symbols[1:])`` yields the adjacent pairs of one word; ``collections.Counter`` or
    ``dict.get(pair, 0)`` does the bookkeeping.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("count_pairs: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """A new list in which every occurrence of ``pair`` in ``symbols`` is joined into one symbol.

    Scan left to right; a symbol takes part in at most one merge, so overlapping occurrences resolve from the left.
    Do not modify ``symbols``: return a new list.

    Examples::

        >>> merge_pair(["l", "o", "w", "e", "r</w>"], ("l", "o"))
        ['lo', 'w', 'e', 'r</w>']
        >>> merge_pair(["a", "a", "a", "b"], ("a", "a"))
        ['aa', 'a', 'b']

    Hint: a ``while`` loop over an index ``i``: when ``symbols[i], symbols[i + 1]`` is the pair, append the joined
    string and advance by 2; otherwise append ``symbols[i]`` and advance by 1. Mind the last symbol.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("merge_pair: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------


def learn_merges(word_counts: dict[tuple[str, ...], int], num_merges: int) -> list[tuple[str, str]]:
    """Learn up to ``num_merges`` merges from the corpus, in order: a list of pairs.

    Each step:

    1. count the pairs with :func:`count_pairs`; if there are none left (every word is a single symbol), stop early;
    2. pick the most frequent pair. Ties go to the **smallest** pair in Python's tuple order, so the result never
       depends on dict order: ``min(pairs, key=lambda pair: (-pairs[pair], pair))``;
    3. record it, and apply it to every word with :func:`merge_pair` (the counts stay with their words).

    Do not modify ``word_counts``: build new dicts as you go.

    Example (Sennrich et al., 2016): on ``{low: 5, lower: 2, newest: 6, widest: 3}`` the first merges are
    ``('e', 's')`` (9 times), then ``('es', 't</w>')``, then ``('l', 'o')``.
    """
    # TODO -------------------------------------------------------------------------------------------------------------
    raise NotImplementedError("learn_merges: write your code, then delete this line")
    # END OF YOUR CODE -------------------------------------------------------------------------------------------------
