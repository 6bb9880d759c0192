"""Trains the reference model's byte-level BPE vocabulary (standard library only).

    python3 bench/refmodel/make_tokenizer.py BOOKS_DIR OUT/tokenizer.json [VOCAB]

Learns merges on the training novels (corpus.py holds four out) until the
vocabulary has VOCAB entries (default 4096: three specials, 256 bytes, the
merges), writes tokenizer.json, and checks that every held-out novel decodes
back to itself and how many characters a token covers.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402


def main():
    books, out = sys.argv[1], sys.argv[2]
    vocab = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    merges = bpe.train([t for _, t in corpus.books(books)], vocab)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(merges), f, ensure_ascii=False)
    enc = bpe.Encoder(merges)
    for name, text in corpus.books(books, held_out=True):
        ids = enc.encode(text)
        if enc.decode(ids) != text:
            sys.exit(f"{name}: does not decode back to itself")
        print(f"{name}: {len(text)} characters, {len(ids)} tokens, {len(text) / len(ids):.2f} per token")


if __name__ == "__main__":
    main()
