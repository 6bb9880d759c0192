"""The plain-text corpus of the reference model: Project Gutenberg novels.

The four novels kvbench's fixtures hold out (Moby Dick, Dracula, Pride and
Prejudice, A Tale of Two Cities) are never trained on, so perplexity on them
(and the demo's excerpt of one) is measured on unseen text.
"""

import os

HELD_OUT = ("Moby-Dick", "Dracula", "Pride-and-Prejudice", "A-Tale-of-Two-Cities")


def clean(raw):
    """A book's text between Project Gutenberg's start and end markers, with
    LF line ends and no byte-order mark."""
    text = raw.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")
    start = text.find("*** START OF")
    if start >= 0:
        text = text[text.index("\n", start) + 1:]
    end = text.find("*** END OF")
    if end >= 0:
        text = text[:end]
    return text.strip() + "\n"


def books(folder, held_out=False):
    """(name, text) of the training novels in folder (held_out: the others)."""
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".txt"):
            continue
        if name.startswith(HELD_OUT) != held_out:
            continue
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
            out.append((name, clean(f.read())))
    return out
