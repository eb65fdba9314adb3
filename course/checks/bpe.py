"""Checks for course/exercises/bpe.py against minclip/tokenizer.py (merge_pair, BPETokenizer.train)."""

import warnings
from collections import Counter

from minclip.tokenizer import NUM_BASE_TOKENS, BPETokenizer, clean_text, merge_pair, split_words, word_symbols

from .base import Exercise, Wrong, call, function

EXERCISE = Exercise(
    name="bpe",
    title="Byte-pair encoding: count adjacent pairs, merge the most frequent one, repeat",
    lesson="02_tokenizer",
    reference="minclip/tokenizer.py",
    functions=("count_pairs", "merge_pair", "learn_merges"),
)

# Sennrich et al. (2016)'s example vocabulary, with CLIP's end-of-word marker on each word's last symbol
TEXTBOOK = {("l", "o", "w</w>"): 5, ("l", "o", "w", "e", "r</w>"): 2, ("n", "e", "w", "e", "s", "t</w>"): 6,
            ("w", "i", "d", "e", "s", "t</w>"): 3}


def _pair_counts(word_counts: dict) -> dict:
    """The oracle: every adjacent position of every word, weighted by the word's count (the loop minclip's trainer
    and its naive test trainer share)."""
    counts = Counter()
    for symbols, count in word_counts.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += count
    return dict(counts)


def _expect_pair_counts(learner, word_counts: dict, case: str):
    answer = call(function(learner, "count_pairs"), word_counts)
    if answer is None:
        raise Wrong(f"count_pairs returned None ({case}): did you forget to `return` the counts?")
    if not isinstance(answer, dict):
        raise Wrong(f"count_pairs should return a dict {{pair: count}}, got {type(answer).__name__} ({case})")
    answer = {tuple(pair) if isinstance(pair, (tuple, list)) else pair: count for pair, count in answer.items()
              if count != 0}
    expected = _pair_counts(word_counts)
    for pair, count in expected.items():
        if pair not in answer:
            raise Wrong(f"count_pairs misses the pair {pair} ({case}), which occurs {count} times")
        if answer[pair] != count:
            raise Wrong(f"count_pairs gives {pair} a count of {answer[pair]}, expected {count} ({case})")
    extra = [pair for pair in answer if pair not in expected]
    if extra:
        raise Wrong(f"count_pairs returns {extra[0]!r}, which is not a pair of adjacent symbols in any word ({case})")


COUNT_HINT = ("for every word, for every adjacent pair zip(symbols, symbols[1:]), add the word's count (a word that "
              "occurs 5 times contributes 5 to each of its pairs)")


@EXERCISE.check(COUNT_HINT)
def count_pairs_textbook(learner):
    """count_pairs on Sennrich et al.'s example (low x5, lower x2, newest x6, widest x3): ('e', 's') occurs 9 times"""
    _expect_pair_counts(learner, TEXTBOOK, "the textbook vocabulary")


@EXERCISE.check(COUNT_HINT + ". Pairs overlap: 'a a a' holds the pair ('a', 'a') twice, at positions 0 and 1")
def count_pairs_repeated_symbols(learner):
    """count_pairs counts overlapping pairs: ('a', 'a', 'a', 'a</w>') x3 gives ('a', 'a') a count of 6"""
    _expect_pair_counts(learner, {("a", "a", "a", "a</w>"): 3, ("b", "a", "a</w>"): 1}, "repeated symbols")


@EXERCISE.check(COUNT_HINT + ". A one-symbol word has no pair, and an empty vocabulary gives an empty dict")
def count_pairs_short_words_and_empty(learner):
    """one-symbol words contribute no pair; an empty vocabulary gives {}"""
    _expect_pair_counts(learner, {("a</w>",): 4, ("i", "t</w>"): 2}, "one-symbol words")
    _expect_pair_counts(learner, {}, "empty vocabulary")


MERGE_CASES = [
    (["l", "o", "w", "e", "r</w>"], ("l", "o"), "pair at the start"),
    (["n", "e", "w", "e", "s", "t</w>"], ("s", "t</w>"), "pair at the end"),
    (["a", "a", "a", "b"], ("a", "a"), "overlapping: left to right, no symbol used twice"),
    (["a", "a", "a", "a"], ("a", "a"), "two merges in a row"),
    (["a", "b", "a", "b", "a"], ("a", "b"), "two separate merges"),
    (["w", "i", "d", "e"], ("e", "s"), "the pair does not occur"),
    (["x</w>"], ("x", "y"), "a single symbol"),
    ([], ("a", "b"), "an empty word"),
    (word_symbols("고양이"), tuple(word_symbols("고")[:2]), "Korean, as UTF-8 byte symbols"),
]


@EXERCISE.check("walk with an index i: if symbols[i], symbols[i + 1] is the pair, append first + second and jump "
                "by 2; otherwise append symbols[i] and step by 1. Build a new list; do not edit the one you were given")
def merge_pair_matches_minclip(learner):
    """merge_pair equals minclip's on 9 cases: pair at the start and end, overlaps, absent pair, empty word, Korean"""
    for symbols, pair, case in MERGE_CASES:
        expected = merge_pair(symbols, pair)
        answer = call(function(learner, "merge_pair"), list(symbols), pair)
        if answer is None:
            raise Wrong(f"merge_pair returned None ({case}): did you forget to `return` the new list?")
        if not isinstance(answer, (list, tuple)) or list(answer) != expected:
            raise Wrong(f"merge_pair({symbols}, {pair}) returned {answer!r}, expected {expected} ({case})")


def _expect_merges(learner, texts: list[str], num_merges: int, case: str):
    """The learner's merges on the words of ``texts`` against ``BPETokenizer.train(texts)``'s."""
    words = Counter(word for text in texts for word in split_words(clean_text(text)))
    word_counts = {tuple(word_symbols(word)): count for word, count in words.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the corpus ran out of pairs": expected in one case
        expected = BPETokenizer.train(texts, vocab_size=NUM_BASE_TOKENS + num_merges + 2).merges
    answer = call(function(learner, "learn_merges"), word_counts, num_merges)
    if answer is None:
        raise Wrong(f"learn_merges returned None ({case}): did you forget to `return` the merges?")
    answer = [tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in answer]
    for rank, (got, want) in enumerate(zip(answer, expected)):
        if got != want:
            raise Wrong(f"merge {rank} is {got!r}, expected {want!r} ({case}); the first {rank} merges were right")
    if len(answer) != len(expected):
        raise Wrong(f"learn_merges returned {len(answer)} merges, expected {len(expected)} ({case})")


LEARN_HINT = ("repeat num_merges times: pairs = count_pairs(words); stop if there are none; best = the pair with the "
              "highest count, ties broken by the smallest pair (min(pairs, key=lambda p: (-pairs[p], p))); record it; "
              "rebuild words with merge_pair applied to every word")


@EXERCISE.check(LEARN_HINT)
def learn_merges_textbook(learner):
    """learn_merges on the textbook vocabulary equals minclip's BPETokenizer.train for 10 merges"""
    texts = ["low " * 5, "lower " * 2, "newest " * 6, "widest " * 3]
    _expect_merges(learner, texts, 10, "the textbook vocabulary")


@EXERCISE.check(LEARN_HINT + ". Ties are common in small corpora; Python compares tuples of strings in order, so "
                "the smallest pair is min over the tied pairs")
def learn_merges_breaks_ties_by_smallest_pair(learner):
    """learn_merges on 'low lower lowest newer wider': three pairs tie at count 3, the smallest wins"""
    _expect_merges(learner, ["low lower lowest", "newer wider"], 3, "ties")


@EXERCISE.check(LEARN_HINT + ". Nothing in the loop may assume ASCII: symbols are whatever strings the words hold")
def learn_merges_korean_and_emoji(learner):
    """learn_merges on English, Korean and emoji captions (UTF-8 byte symbols) equals minclip's for 40 merges"""
    texts = ["a cat on a tree", "고양이가 나무 위에 있다", "a cat 🐱 and a dog 🐶", "고양이와 개", "two cats 🐱🐱"] * 2
    _expect_merges(learner, texts, 40, "English, Korean and emoji")


@EXERCISE.check(LEARN_HINT + ". When no word has two symbols left there is no pair to merge: stop early and return "
                "the merges found so far")
def learn_merges_stops_when_no_pair_is_left(learner):
    """asked for 8 merges where only 3 are possible ('ab ab abc'), learn_merges returns those 3"""
    _expect_merges(learner, ["ab ab abc"], 8, "fewer pairs than merges asked for")
