"""Benchmark minclip's BPE tokenizer against OpenAI's `simple_tokenizer` (a script, not a test).

Prints encode throughput (texts/s, tokens/s) with a cold and a warm word cache for OpenAI's SimpleTokenizer and
minclip's BPETokenizer (with ftfy, and with the hand-written clean-up), checks that all three give the same ids, and
times training a 4,096-token vocabulary. The corpus is the shipped emoji captions, data/emoji/captions.jsonl, when
present, otherwise a built-in fallback; the output says which.

    python benchmarks/bench_tokenizer.py            # from the repository root
    python benchmarks/bench_tokenizer.py --repeats 3 --vocab-size 4096
"""

import argparse
import json
import os
import platform
import random
import sys
import time
import unicodedata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: make `minclip` and `tests` importable

from minclip.tokenizer import BPETokenizer  # noqa: E402

CAPTIONS = ROOT / "data" / "emoji" / "captions.jsonl"

# Fallback corpus, Korean half: words an emoji caption uses, combined below into short phrases.
KOREAN_MODIFIERS = [
    "웃는", "활짝 웃는", "우는", "화난", "놀란", "잠자는", "윙크하는", "생각하는", "작은", "큰", "빨간", "파란", "노란",
    "초록색", "검은", "흰", "분홍색", "보라색", "주황색", "반짝이는", "귀여운", "행복한", "슬픈", "뜨거운", "차가운",
]
KOREAN_NOUNS = [
    "얼굴", "하트", "고양이", "강아지", "원숭이", "곰", "토끼", "여우", "호랑이", "사자", "말", "소", "돼지", "닭", "새",
    "물고기", "꽃", "나무", "잎", "별", "달", "해", "구름", "비", "눈", "번개", "불", "물방울", "사과", "바나나", "포도",
    "딸기", "케이크", "빵", "커피", "차", "자동차", "버스", "기차", "비행기", "배", "집", "학교", "병원", "시계", "책",
    "연필", "전화기", "컴퓨터", "음악", "축구공", "깃발", "손", "엄지", "눈물", "입술", "왕관", "선물", "풍선", "무지개",
]


def fallback_corpus(seed: int = 0) -> list[str]:
    """English: the Unicode names of symbol and emoji code points (from unicodedata). Korean: random phrases."""
    english = [
        unicodedata.name(chr(cp)).lower()
        for block in (range(0x2190, 0x2C00), range(0x1F000, 0x1FB00))
        for cp in block
        if unicodedata.name(chr(cp), "")
    ]
    rng = random.Random(seed)
    korean = [
        " ".join([rng.choice(KOREAN_MODIFIERS), *rng.sample(KOREAN_NOUNS, rng.randint(1, 2))])
        for _ in range(len(english))
    ]
    return [text for pair in zip(english, korean) for text in pair]


def emoji_corpus(path: Path) -> list[str]:
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            for field in ("name_en", "name_ko", "keywords_en", "keywords_ko"):
                value = record.get(field) or ""
                texts.append(", ".join(value) if isinstance(value, list) else str(value))
    return [text for text in texts if text]


def measure(encode, reset_cache, texts, repeats):
    """Best of `repeats` passes: (cold texts/s, warm texts/s, tokens in one pass)."""
    cold = warm = float("inf")
    for _ in range(repeats):
        reset_cache()
        start = time.perf_counter()
        tokens = sum(len(encode(text)) for text in texts)
        cold = min(cold, time.perf_counter() - start)
        start = time.perf_counter()
        sum(len(encode(text)) for text in texts)
        warm = min(warm, time.perf_counter() - start)
    return len(texts) / cold, len(texts) / warm, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    if CAPTIONS.exists():
        texts = emoji_corpus(CAPTIONS)
        source = f"{CAPTIONS.relative_to(ROOT)} (name_en, name_ko, keywords_en, keywords_ko)"
    else:
        texts, source = fallback_corpus(), "built-in fallback (Unicode names of symbols and emoji + Korean phrases)"
    print(f"corpus: {source}: {len(texts)} texts, {sum(map(len, texts))} characters")

    contenders = []
    try:
        from tests.references import openai_simple_tokenizer

        reference = openai_simple_tokenizer().SimpleTokenizer()
        initial_cache = dict(reference.cache)
        reset = lambda: setattr(reference, "cache", dict(initial_cache))  # noqa: E731
        contenders.append(("OpenAI SimpleTokenizer", reference.encode, reset))
    except Exception as error:  # the references are optional: ftfy, regex and clip-anytorch installed by `make setup`
        print(f"OpenAI's tokenizer not available ({error}); timing minclip only")
    for use_ftfy in (True, False):
        try:
            tokenizer = BPETokenizer.openai(use_ftfy=use_ftfy)
        except ImportError:
            continue
        name = "minclip BPETokenizer" + (" (ftfy)" if use_ftfy else " (no ftfy)")
        contenders.append((name, tokenizer.encode, tokenizer.cache.clear))

    # ASCII text skips the Unicode fixing in minclip (nothing to fix), so show it apart from the rest.
    subsets = [("all texts", texts), ("ASCII texts", [t for t in texts if t.isascii()]),
               ("non-ASCII texts (ftfy runs)", [t for t in texts if not t.isascii()])]
    for subset, subset_texts in subsets:
        if not subset_texts:
            continue
        print(f"\nencode {subset} ({len(subset_texts)}), OpenAI's vocabulary, best of {args.repeats} passes:")
        print(f"{'tokenizer':32s} {'cold texts/s':>13s} {'cold tokens/s':>14s} "
              f"{'warm texts/s':>13s} {'warm tokens/s':>14s}")
        for name, encode, reset_cache in contenders:
            cold, warm, tokens = measure(encode, reset_cache, subset_texts, args.repeats)
            per_text = tokens / len(subset_texts)
            print(f"{name:32s} {cold:13,.0f} {cold * per_text:14,.0f} {warm:13,.0f} {warm * per_text:14,.0f}")
    ids = [[encode(text) for text in texts] for _, encode, _ in contenders]
    same = all(other == ids[0] for other in ids[1:])
    print(f"ids identical across the {len(contenders)} tokenizers on all {len(texts)} texts: {same}")

    print(f"\ntrain a {args.vocab_size}-token vocabulary on the corpus:")
    best = float("inf")
    for _ in range(max(1, args.repeats // 2)):
        start = time.perf_counter()
        trained = BPETokenizer.train(texts, args.vocab_size)
        best = min(best, time.perf_counter() - start)
    tokens_trained = sum(len(trained.encode(text)) for text in texts)
    tokens_openai = sum(len(ids_) for ids_ in ids[-1])
    print(f"{best:.2f} s (best of {max(1, args.repeats // 2)}), {len(trained.merges)} merges, vocab_size "
          f"{trained.vocab_size}; tokens per text: {tokens_trained / len(texts):.2f} trained vs "
          f"{tokens_openai / len(texts):.2f} OpenAI's vocabulary")


if __name__ == "__main__":
    main()
