"""Byte-level BPE, the tokenizer of OpenAI's CLIP: train one on captions, or load OpenAI's 49,408-token vocabulary.

References: Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units" (BPE); Radford et al.
2019, GPT-2 (byte-level BPE); Radford et al. 2021, CLIP, whose `clip/simple_tokenizer.py` this file reproduces id for
id (tests/test_tokenizer.py checks it against ids produced by OpenAI's code).

One text becomes ids in five steps:

    clean   fix broken Unicode (ftfy if installed, else `fix_text` below), unescape HTML, collapse whitespace,
            lower-case
    split   cut into words: special-token strings, the contractions 's 't 're 've 'm 'll 'd, runs of letters,
            single digits, runs of other symbols. Spaces vanish here; a word's end is marked instead (step 3).
    bytes   encode each word as UTF-8 and write each byte as one printable character (`bytes_to_unicode`), so every
            string is representable with 256 base symbols; the last symbol carries the end-of-word marker "</w>"
    merge   repeatedly join the adjacent pair of symbols that was learned earliest (lowest rank) until none applies
    ids     look the symbols up in the vocabulary

The vocabulary is laid out as OpenAI's: the 256 byte symbols, the same 256 with "</w>", one symbol per merge in the
order learned, then <|startoftext|> and <|endoftext|> as the last two ids. `BPETokenizer.train` learns merges from
captions (English, Korean, emoji) with incremental pair counts; `BPETokenizer.openai()` reads OpenAI's merges.
`tokenize` wraps texts as `clip.tokenize` does, for the text tower (minclip.text), which pools at `eot_token_id`.

The file opens with the BPE core (the byte symbols, `merge_pair`, and `BPETokenizer`: train, encode, decode,
tokenize), then the text cleaning (step 1) and word splitting (step 2) it calls, then the reading of OpenAI's file.

Standard library and torch only, so this file can be copied into coursework alone (ftfy is used when installed).
"""

from __future__ import annotations

import functools
import gzip
import heapq
import html
import html.entities
import re
import sys
import unicodedata
import warnings
from collections import Counter, defaultdict
from itertools import repeat
from pathlib import Path

import torch

try:  # optional, as in OpenAI's tokenizer: ftfy repairs mojibake that the hand-written `fix_text` leaves alone
    import ftfy as _ftfy
except ImportError:
    _ftfy = None

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
END_OF_WORD = "</w>"
NUM_BASE_TOKENS = 512  # 256 byte symbols + the same 256 carrying END_OF_WORD
FILE_VERSION = "#version: minclip-bpe 1"
OPENAI_MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
OPENAI_NUM_MERGES = 48_894  # OpenAI's file holds 262,144 merges; CLIP uses the first 49,408 - 512 - 2 of them


# ----------------------------------------------------------------------------------------------------------------------
# Steps 3 and 4: bytes and merges.

def bytes_to_unicode() -> dict[int, str]:
    """Byte value -> one printable character standing for it, in OpenAI's order (which fixes the first 256 ids).

    The 188 bytes that already print as a visible character stand for themselves; the other 68 (controls, space,
    soft hyphen, ...) are shifted to U+0100 onwards in byte order, so a merges file never holds whitespace.

    Example:
        >>> table = bytes_to_unicode()
        >>> table[ord("a")], table[ord(" ")], list(table)[:3]
        ('a', 'Ġ', [33, 34, 35])
    """
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in visible}
    shifted = (byte for byte in range(256) if byte not in table)
    for offset, byte in enumerate(shifted):
        table[byte] = chr(256 + offset)
    return table


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Join every occurrence of `pair` in `symbols`, scanning left to right without overlaps.

    Example:
        >>> merge_pair(["a", "a", "a", "b"], ("a", "a"))
        ['aa', 'a', 'b']
    """
    first, second = pair
    merged, i, n = [], 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


_BYTE_SYMBOLS = [symbol for _, symbol in sorted(bytes_to_unicode().items())]  # byte value -> symbol


def word_symbols(word: str) -> list[str]:
    """A word as BPE starts from it: one symbol per UTF-8 byte, the last marked with "</w>".

    Example:
        >>> word_symbols("été")
        ['Ã', '©', 't', 'Ã', '©</w>']
    """
    symbols = [_BYTE_SYMBOLS[byte] for byte in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


class BPETokenizer:
    """Byte-level BPE with CLIP's clean-up, pre-tokenisation and vocabulary layout.

    Args:
        merges: pairs of symbols in the order they were learned (rank 0 first). Every symbol must be a byte symbol
            (optionally with "</w>") or the result of an earlier merge.
        use_ftfy: clean text with ftfy (None: when installed; see `clean_text`).

    Attributes:
        vocab: id -> symbol; encoder: symbol -> id; merge_ranks: pair -> rank; cache: word -> ids (clear it to
        measure cold speed). vocab_size, sot_token_id (= vocab_size - 2), eot_token_id (= vocab_size - 1).

    Example:
        >>> tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=512 + 3 + 2)
        >>> tok.merges
        [('a', 'a'), ('a', 'b'), ('aa', 'ab')]
        >>> [tok.vocab[i] for i in tok.encode("aaabdaaabac")]
        ['aaab', 'd', 'aaab', 'a', 'c</w>']
    """

    def __init__(self, merges: list[tuple[str, str]], *, use_ftfy: bool | None = None):
        base = list(bytes_to_unicode().values())
        self.vocab = base + [symbol + END_OF_WORD for symbol in base]
        known = set(self.vocab)
        self.merges = []
        for rank, pair in enumerate(merges):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
                raise ValueError(f"merge {rank} must be a pair of strings, got {pair!r}")
            unknown = [symbol for symbol in pair if symbol not in known]
            if unknown:
                raise ValueError(
                    f"merge {rank} {tuple(pair)!r} uses {unknown[0]!r}, which is neither a byte symbol nor made by an "
                    "earlier merge; merges must be listed in the order they were learned"
                )
            self.merges.append(tuple(pair))
            self.vocab.append(pair[0] + pair[1])
            known.add(pair[0] + pair[1])
        self.vocab += SPECIAL_TOKENS
        self.vocab_size = len(self.vocab)
        self.sot_token_id, self.eot_token_id = self.vocab_size - 2, self.vocab_size - 1
        self.encoder = {symbol: i for i, symbol in enumerate(self.vocab)}  # a repeated symbol keeps its last id
        self.merge_ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.use_ftfy = _resolve_ftfy(use_ftfy)
        self.cache: dict[str, tuple[int, ...]] = {}
        self._specials = {token: self.encoder[token] for token in SPECIAL_TOKENS}
        byte_of = {symbol: byte for byte, symbol in bytes_to_unicode().items()}
        self._token_bytes = [  # id -> the bytes it decodes to; "</w>" becomes a space
            bytes(byte_of[c] for c in symbol.removesuffix(END_OF_WORD)) + b" " * symbol.endswith(END_OF_WORD)
            for symbol in self.vocab[: -len(SPECIAL_TOKENS)]
        ] + [token.encode() for token in SPECIAL_TOKENS]

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"

    # -- encoding ------------------------------------------------------------------------------------------------------

    def _encode_word(self, word: str) -> tuple[int, ...]:
        if word in self._specials:  # the literal strings "<|startoftext|>" / "<|endoftext|>" are the special tokens
            return (self._specials[word],)
        symbols = word_symbols(word)
        rank_of, never = self.merge_ranks.get, len(self.merges)  # unmerged pairs rank after every merge
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            ranks = list(map(rank_of, pairs, repeat(never)))  # ranks[i] = rank_of(pairs[i], never)
            best = min(ranks)
            if best == never:  # no adjacent pair was ever merged: done
                break
            symbols = merge_pair(symbols, pairs[ranks.index(best)])  # the earliest-learned merge goes first
        return tuple(self.encoder[symbol] for symbol in symbols)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without start/end tokens.

        Example (OpenAI's vocabulary):
            >>> tok = BPETokenizer.openai()
            >>> tok.encode("A photo of a CAT.")
            [320, 1125, 539, 320, 2368, 269]
            >>> tok.decode([320, 1125, 539, 320, 2368, 269])
            'a photo of a cat . '
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}; for several texts use tokenize(texts)")
        ids, cache = [], self.cache
        for word in split_words(clean_text(text, self.use_ftfy)):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = cache[word] = self._encode_word(word)
            ids.extend(word_ids)
        return ids

    def decode(self, ids) -> str:
        """Ids (a sequence of ints or a 1-D tensor) -> text. Each "</w>" becomes a space, so words come out separated
        by single spaces with a trailing one, as in OpenAI's decode; special tokens decode to their strings. Bytes
        that do not form valid UTF-8 (a cut-off Korean syllable) become U+FFFD.

        Example:
            >>> tok = BPETokenizer.openai()
            >>> tok.decode(tok.encode("고양이 🐱, it's"))
            "고양이 🐱, it 's "
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects one sequence of ids (1-D), got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = bytearray()
        for position, token_id in enumerate(ids):
            if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
                raise TypeError(f"ids[{position}] must be an int, got {type(token_id).__name__}")
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"ids[{position}] = {token_id} is out of range for vocab_size={self.vocab_size}")
            out += self._token_bytes[token_id]
        return out.decode("utf-8", errors="replace")

    def tokenize(self, texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
        """Texts -> LongTensor (N, context_length): [sot, ids..., eot, 0, 0, ...], as `clip.tokenize`.

        With `truncate=True` a too-long text keeps its first context_length tokens and its last becomes eot;
        without it, a too-long text raises ValueError.

        Example:
            >>> tok = BPETokenizer.openai()
            >>> tok.tokenize(["a cat", "a dog"], context_length=6)
            tensor([[49406,   320,  2368, 49407,     0,     0],
                    [49406,   320,  1929, 49407,     0,     0]])
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2 (room for sot and eot), got {context_length!r}")
        rows = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"texts[{i}] ({text[:40]!r}{'...' if len(text) > 40 else ''}) has {len(ids)} tokens with "
                        f"start and end tokens, more than context_length={context_length}; shorten it or pass "
                        "truncate=True"
                    )
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            rows.append(ids + [0] * (context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), context_length)  # (N, context_length)

    # -- training ------------------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts, vocab_size: int, *, use_ftfy: bool | None = None) -> BPETokenizer:
        """Learn merges from a corpus until the vocabulary has `vocab_size` tokens (512 byte symbols + merges + 2).

        Each step merges the most frequent adjacent pair (ties: the smallest pair in string order, so results do not
        depend on corpus order). Pair counts are updated incrementally: a merge only revisits the words that contain
        the pair, found through an index pair -> words, and a heap holds the counts (stale entries are skipped).

        Example:
            >>> tok = BPETokenizer.train(["low lower lowest", "newer wider"], vocab_size=512 + 3 + 2)
            >>> tok.merges  # "er</w>", "lo" and "ow" occur 3 times each: the smallest pair wins the tie
            [('e', 'r</w>'), ('l', 'o'), ('lo', 'w')]
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of texts, not one str; wrap it: train([text], vocab_size)")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < NUM_BASE_TOKENS + 2:
            raise ValueError(
                f"vocab_size must be an int >= {NUM_BASE_TOKENS + 2} (256 bytes, 256 bytes with </w>, 2 special "
                f"tokens), got {vocab_size!r}"
            )
        use_ftfy = _resolve_ftfy(use_ftfy)
        word_counts = Counter()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            word_counts.update(split_words(clean_text(text, use_ftfy)))
        for special in SPECIAL_TOKENS:  # "<|endoftext|>" in a caption is the special token, never merged
            word_counts.pop(special, None)

        words = [word_symbols(word) for word in word_counts]  # each distinct word once, with its count
        counts = list(word_counts.values())
        pair_counts: dict[tuple[str, str], int] = defaultdict(int)
        words_with: dict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> indices of words containing it
        for w, (symbols, count) in enumerate(zip(words, counts)):
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
                words_with[pair].add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges, merged, wanted = [], set(), vocab_size - NUM_BASE_TOKENS - 2
        while len(merges) < wanted and heap:
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair) != -negative_count:  # stale: the count changed after this entry was pushed
                continue
            merges.append(pair)
            merged.add(pair)
            del pair_counts[pair]
            change = Counter()  # pair -> change in its count, over all words this merge touches
            for w in words_with.pop(pair):
                old, new, count = words[w], merge_pair(words[w], pair), counts[w]
                words[w] = new
                old_pairs, new_pairs = Counter(zip(old, old[1:])), Counter(zip(new, new[1:]))
                for p in old_pairs.keys() - new_pairs.keys():
                    if p != pair:
                        words_with[p].discard(w)
                for p in new_pairs.keys() - old_pairs.keys():
                    words_with[p].add(w)
                for p in old_pairs.keys() | new_pairs.keys():
                    change[p] += (new_pairs[p] - old_pairs[p]) * count
            for p, delta in change.items():
                if delta and p not in merged:  # a merged pair may reappear only if two merges spell the same symbol
                    pair_counts[p] += delta
                    if pair_counts[p] > 0:
                        heapq.heappush(heap, (-pair_counts[p], p))
                    else:
                        del pair_counts[p]
        if len(merges) < wanted:
            warnings.warn(
                f"the corpus ran out of pairs after {len(merges)} merges: vocab_size is "
                f"{NUM_BASE_TOKENS + len(merges) + 2}, not {vocab_size}; give more text or ask for fewer tokens",
                stacklevel=2,
            )
        return cls(merges, use_ftfy=use_ftfy)

    # -- files ---------------------------------------------------------------------------------------------------------

    def save(self, path) -> None:
        """Write the merges as text: a version line, then one "left right" pair per line in rank order (symbols never
        contain spaces: bytes_to_unicode moves the space byte to "Ġ")."""
        lines = [FILE_VERSION, *(f"{left} {right}" for left, right in self.merges)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path, *, use_ftfy: bool | None = None) -> BPETokenizer:
        """Read a file written by `save` (for OpenAI's merges file use `openai(path)`)."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        if not lines or lines[0] != FILE_VERSION:
            first = lines[0][:60] if lines else ""
            raise ValueError(
                f"{path} does not start with {FILE_VERSION!r} (found {first!r}); it was not written by "
                "BPETokenizer.save. For OpenAI's bpe_simple_vocab_16e6.txt.gz use BPETokenizer.openai(path)"
            )
        return cls(_parse_merges(lines[1:], path, first_line=2), use_ftfy=use_ftfy)

    @classmethod
    def openai(cls, path=None, *, use_ftfy: bool | None = None) -> BPETokenizer:
        """OpenAI's CLIP vocabulary (49,408 tokens) from their merges file `bpe_simple_vocab_16e6.txt.gz` (MIT).

        Without `path`, the file is looked for beside this module (copy it there with tokenizer.py), then in the
        repository's data/openai_bpe/ (a checkout, or `pip install -e .`).
        """
        return cls(_openai_merges(str(path) if path is not None else str(_find_openai_merges())), use_ftfy=use_ftfy)


# ----------------------------------------------------------------------------------------------------------------------
# Step 1: clean. `fix_text` is the part of ftfy.fix_text (v6, default settings) that fits in a page: everything except
# mojibake detection ("cafÃ©" -> "café"), which needs ftfy's statistics. Each fix runs in ftfy's order, repeated until
# the text stops changing, so with or without ftfy the ids agree on any text that is not mojibake.

def _c1_as_windows_1252() -> dict[int, str]:
    """C1 controls U+0080..U+009F are almost always Windows-1252 bytes misread as Latin-1: \\x93 was a curly quote."""
    table = {}
    for byte in range(0x80, 0xA0):
        try:
            table[byte] = bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined in Windows-1252: keep them
            pass
    return table


# Ligatures of Latin letters (usually copy-paste accidents) and legacy digraphs, spelled out.
_LIGATURES = {
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž", "Ǉ": "LJ",
    "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj", "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl",
    "ﬅ": "ſt", "ﬆ": "st",
}
# Full-width ASCII and half-width katakana/Hangul (U+FF01..U+FFEF) become their usual forms; so does U+3000 (a space).
_WIDTHS = {0x3000: " "} | {
    cp: unicodedata.normalize("NFKC", chr(cp))
    for cp in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
}
_QUOTES = {cp: "'" for cp in (0x02BC, 0x2018, 0x2019, 0x201A, 0x201B)} | {cp: '"' for cp in range(0x201C, 0x2020)}
_LINE_BREAKS = {ord("\r"): "\n", 0x2028: "\n", 0x2029: "\n", 0x85: "\n"}  # after "\r\n" -> "\n"
# Invisible controls nobody means to type; tab, line feed, form feed and carriage return stay.
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF,
                           *range(0xFFF9, 0xFFFD)])
_C1 = _c1_as_windows_1252()
_LIGATURE_TABLE = str.maketrans(_LIGATURES)
_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[\d;]*[A-Za-z]")  # colour codes such as "\x1b[31m"
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unescape_entity(match: re.Match) -> str:
    """One `&...;` entity, strictly: only entities ending in ";", plus upper-cased ones ("&EACUTE;" -> "É")."""
    entity = match.group(0)
    if entity[1] == "#":  # numeric: "&#233;", "&#xE9;"; keep it unless the whole thing, ";" included, was decoded
        decoded = html.unescape(entity)
        return entity if ";" in decoded else decoded
    name = entity[1:]
    if name in html.entities.html5:
        return html.entities.html5[name]
    lower = name.lower()
    if name == lower.upper() and lower in html.entities.html5 and html.unescape(entity) == entity:
        return html.entities.html5[lower].upper()
    return entity


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        before = text
        if unescape:
            text = _ENTITY.sub(_unescape_entity, text)
        text = text.translate(_C1).translate(_LIGATURE_TABLE).translate(_WIDTHS).translate(_QUOTES)
        text = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
        if _SURROGATE.search(text):  # halves of UTF-16 pairs: join proper pairs, replace strays with U+FFFD
            text = _SURROGATE_PAIR.sub(lambda m: m.group(0).encode("utf-16", "surrogatepass").decode("utf-16"), text)
            text = _SURROGATE.sub("\ufffd", text)
        text = _TERMINAL_ESCAPE.sub("", text).translate(_CONTROLS)
        text = unicodedata.normalize("NFC", text)  # "e" + combining acute -> "é", one code point
        if text == before:
            return text


def fix_text(text: str) -> str:
    """Repair common Unicode accidents, as `ftfy.fix_text` does, except mojibake.

    HTML entities, curly quotes, Latin ligatures, full-width forms, Windows-1252 stand-ins, line breaks, broken
    surrogates, terminal colour codes and invisible control characters; then NFC normalisation. Like ftfy, it works
    line by line and stops unescaping HTML from the first line that contains "<" (that text may be real markup).

    Example:
        >>> fix_text("“ﬁsh” &amp; ＣＨＩＰＳ\\x00")
        '"fish" & CHIPS'
    """
    unescape, pieces = True, []
    for line in re.findall(r"[^\n]*\n|[^\n]+", text):  # lines keep their "\n", so "\r\n" stays in one piece
        unescape = unescape and "<" not in line
        pieces.append(_fix_segment(line, unescape))
    return "".join(pieces)


# Unicode's White_Space property: what `\s` means in the `regex` module OpenAI's pattern uses. (Python's str.isspace
# and re's `\s` also count U+001C..U+001F, so the set is listed explicitly.)
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WHITESPACE_RUN = re.compile(f"[{_WHITESPACE}]+")
# Printable ASCII without "&", plus tab, newline and form feed: text made only of these has nothing to fix or
# unescape (ftfy leaves ASCII alone unless it holds entities, controls, "\r" or colour codes), so skip the slow part.
_NEEDS_FIXING = re.compile(r"[^\t\n\x0c\x20-\x25\x27-\x7e]")


def clean_text(text: str, use_ftfy: bool | None = None) -> str:
    """CLIP's clean-up: fix Unicode, unescape HTML twice, collapse whitespace to single spaces, strip, lower-case.

    `use_ftfy=None` uses ftfy when it is installed, else `fix_text`. Plain ASCII text skips both (nothing to fix).

    Example:
        >>> clean_text("  A  Photo&amp;amp;\\tof a CAT ")
        'a photo& of a cat'
    """
    if _NEEDS_FIXING.search(text):
        text = _ftfy.fix_text(text) if _resolve_ftfy(use_ftfy) else fix_text(text)
        text = html.unescape(html.unescape(text))  # as OpenAI: entities escaped twice ("&amp;amp;") are common
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


def _resolve_ftfy(use_ftfy: bool | None) -> bool:
    if use_ftfy is None:
        return _ftfy is not None
    if use_ftfy and _ftfy is None:
        raise ImportError("use_ftfy=True but ftfy is not installed; `pip install ftfy` or pass use_ftfy=False")
    return bool(use_ftfy)


# ----------------------------------------------------------------------------------------------------------------------
# Step 2: split into words. OpenAI uses the `regex` module with Unicode properties and IGNORECASE:
#     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
# Python's `re` has no \p{...}, so we list the letters (\p{L}) and numbers (\p{N}) ourselves from `unicodedata`, and
# keep IGNORECASE for the literal alternatives only (for both engines it lets "ſ", long s, match "s"). Ignoring case
# leaves the letter and number classes as they are, with one exception: U+0345, a combining mark whose upper case is
# the letter Ι, counts as a letter for the negated class, so no alternative matches it and OpenAI drops it; so do we.
# The one remaining difference: characters added to Unicode after the version this Python knows
# (unicodedata.unidata_version; 14.0 for Python 3.11) are symbols here but may be letters or numbers to `regex`.


def _ranges(code_points: list[int]) -> str:
    """Sorted code points -> the inside of a regex character class, one escaped range per run.

    Example:
        >>> print(_ranges([65, 66, 67, 97]))  # A-C and a
        \\U00000041-\\U00000043\\U00000061
    """
    parts, start = [], None
    for i, cp in enumerate(code_points):
        if start is None:
            start = cp
        if i + 1 == len(code_points) or code_points[i + 1] != cp + 1:
            parts.append(f"\\U{start:08x}" if start == cp else f"\\U{start:08x}-\\U{cp:08x}")
            start = None
    return "".join(parts)


@functools.cache
def word_pattern() -> re.Pattern:
    """CLIP's pre-tokenisation pattern for Python's `re`, built once (on first use) from this Python's Unicode data."""
    letters, numbers = [], []
    for cp in range(sys.maxunicode + 1):
        major_category = unicodedata.category(chr(cp))[0]
        if major_category == "L":
            letters.append(cp)
        elif major_category == "N":
            numbers.append(cp)
    letter, number = _ranges(letters), _ranges(numbers)
    return re.compile(
        r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)"
        f"|[{letter}]+|[{number}]|[^{_WHITESPACE}{letter}{number}\u0345]+"
    )


def split_words(text: str) -> list[str]:
    """Cut cleaned text into the words BPE works on; whitespace is dropped.

    Example:
        >>> split_words("it's 2024: 고양이 🐱🐱!")
        ['it', "'s", '2', '0', '2', '4', ':', '고양이', '🐱🐱!']
    """
    return word_pattern().findall(text)


# ----------------------------------------------------------------------------------------------------------------------
# OpenAI's merges file.

def _parse_merges(lines: list[str], path, first_line: int) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(lines, start=first_line):
        pair = line.split()
        if len(pair) != 2:
            raise ValueError(f"{path}, line {number}: expected two symbols separated by a space, got {line!r}")
        merges.append((pair[0], pair[1]))
    return merges


@functools.cache
def _openai_merges(path: str) -> tuple[tuple[str, str], ...]:
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    # Line 1 is a version header; CLIP keeps the next 48,894 merges so that the vocabulary has 49,408 tokens.
    return tuple(_parse_merges(lines[1 : 1 + OPENAI_NUM_MERGES], path, first_line=2))


def _find_openai_merges() -> Path:
    here = Path(__file__).resolve().parent
    candidates = [here / OPENAI_MERGES_FILE, here.parent / "data" / "openai_bpe" / OPENAI_MERGES_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"OpenAI's merges file {OPENAI_MERGES_FILE} is not in {' or '.join(map(str, candidates))}; copy it there "
        "(it ships in minclip's data/openai_bpe/ and in the clip-anytorch and open-clip-torch wheels) or pass "
        "BPETokenizer.openai(path=...)"
    )
