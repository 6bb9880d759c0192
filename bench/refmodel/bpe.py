"""Byte-level BPE for kvbench's reference model: training, encoding, tokenizer.json.

Standard library only, so the vocabulary can be trained and checked on any machine.
The pre-tokenizer is one regular expression with ASCII classes only (so Python's re,
Go's regexp2 and Hugging Face's tokenizers split text the same way), then every piece
is mapped byte by byte to printable characters (the byte-level alphabet) and merged by
rank. Digits stay single tokens (a number is spelled digit by digit, as in Llama-2), so
a key of five digits is five tokens whatever its value.
"""

import collections
import heapq
import json
import re

WS = " \\t\\r\\n\\f\\v"
# Contractions; words (one leading space); one digit; runs of other symbols;
# whitespace (a run before a word keeps its last space for the word).
PATTERN = (
    "'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]| ?[^" + WS + "A-Za-z0-9]+"
    "|[" + WS + "]+(?![^" + WS + "])|[" + WS + "]+"
)
SPLIT = re.compile(PATTERN)
SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2: unknown, BOS, EOS


def byte_alphabet():
    """The byte-level alphabet: printable bytes stand for themselves, the
    others (controls, space, a few Latin-1 gaps) take the characters from
    U+0100 on, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


BYTES = byte_alphabet()


def pieces(text):
    """The pre-tokens of text, each as a string of byte-level characters."""
    return ["".join(BYTES[b] for b in m.encode("utf-8")) for m in SPLIT.findall(text)]


def merge(w, a, b):
    """w with every adjacent a, b (left to right) replaced by a + b."""
    out, j = [], 0
    while j < len(w):
        if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
            out.append(a + b)
            j += 2
        else:
            out.append(w[j])
            j += 1
    return out


def train(texts, vocab_size):
    """Learns merges from texts until the vocabulary (specials, 256 bytes,
    merges) has vocab_size entries. Returns the list of merges (a, b)."""
    counts = collections.Counter()
    for t in texts:
        counts.update(pieces(t))
    words = [list(w) for w in counts]
    freq = [counts[w] for w in counts]
    pairs = collections.Counter()
    where = collections.defaultdict(set)  # pair -> ids of words holding it
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    target = vocab_size - len(SPECIALS) - 256
    while len(merges) < target and heap:
        c, best = heapq.heappop(heap)
        if pairs.get(best, 0) != -c:
            continue  # a stale entry: the pair's count changed since
        if -c < 2:
            break
        merges.append(best)
        a, b = best
        touched = set()
        for i in list(where[best]):
            w = words[i]
            for x, y in zip(w, w[1:]):  # remove the word's old pairs
                pairs[(x, y)] -= freq[i]
                touched.add((x, y))
            out = merge(w, a, b)
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += freq[i]
                where[(x, y)].add(i)
                touched.add((x, y))
        del where[best]
        pairs.pop(best, None)
        for p in touched:
            n = pairs.get(p, 0)
            if n <= 0:
                pairs.pop(p, None)
            elif p != best:
                heapq.heappush(heap, (-n, p))
    return merges


class Encoder:
    """Encodes text with a vocabulary's merges (lowest rank first), caching
    each pre-token's ids."""

    def __init__(self, merges):
        self.rank = {m: r for r, m in enumerate(merges)}
        self.vocab = {s: i for i, s in enumerate(SPECIALS)}
        for b in range(256):
            self.vocab[BYTES[b]] = len(self.vocab)
        for a, b in merges:
            self.vocab[a + b] = len(self.vocab)
        self.itos = {i: s for s, i in self.vocab.items()}
        self.cache = {}
        self.unbyte = {c: b for b, c in BYTES.items()}

    def piece(self, p):
        ids = self.cache.get(p)
        if ids is not None:
            return ids
        w = list(p)
        while len(w) > 1:
            best, at = None, -1
            for j in range(len(w) - 1):
                r = self.rank.get((w[j], w[j + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, j
            if best is None:
                break
            w = merge(w, w[at], w[at + 1])
        ids = [self.vocab[s] for s in w]
        if len(self.cache) < 2_000_000:
            self.cache[p] = ids
        return ids

    def encode(self, text):
        out = []
        for p in pieces(text):
            out.extend(self.piece(p))
        return out

    def decode(self, ids):
        data = bytearray()
        for i in ids:
            if i < len(SPECIALS):
                continue
            data.extend(self.unbyte[c] for c in self.itos[i])
        return data.decode("utf-8", errors="replace")


def tokenizer_json(merges):
    """The Hugging Face tokenizer.json of a vocabulary."""
    enc = Encoder(merges)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": enc.vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }


def tokenizer_config():
    """tokenizer_config.json: which tokens are BOS and EOS; no chat template
    (the reference model is not an instruct model)."""
    return {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }


def load_merges(path):
    """The merges of a tokenizer.json written by tokenizer_json."""
    with open(path, encoding="utf-8") as f:
        return [tuple(m) for m in json.load(f)["model"]["merges"]]
