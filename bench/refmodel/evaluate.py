"""Measures a trained reference model in transformers (run on the GPU machine).

    python3 bench/refmodel/evaluate.py MODEL_DIR BOOKS_DIR [MODEL_DIR2 ...]

Prints, per model: the attention mass every layer puts on the first token and on
the first four (mean over heads and over queries 512..2047 of held-out windows):
an attention sink shows as a large share on a few first tokens; and kvbench's
passkey prompt at 4K tokens with the key at depth 0, the hardest place (40 trials).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import data  # noqa: E402


@torch.no_grad()
def sink_mass(model, ids, windows=8, length=2048):
    first, four = None, None
    for k in range(windows):
        x = torch.tensor([[data.BOS] + ids[k * length:(k + 1) * length - 1]], device="cuda")
        att = model(input_ids=x, output_attentions=True, use_cache=False).attentions
        f = torch.stack([a[0, :, 512:, 0].float().mean() for a in att])
        q = torch.stack([a[0, :, 512:, :4].float().sum(-1).mean() for a in att])
        first = f if first is None else first + f
        four = q if four is None else four + q
    return [round(v, 3) for v in (first / windows).tolist()], [round(v, 3) for v in (four / windows).tolist()]


@torch.no_grad()
def passkey_depth0(model, enc, length=4096, trials=40):
    unit = len(enc.encode(data.PASSKEY_FILLER + " "))
    ok = 0
    for t in range(trials):
        k = str(1 + (t * 7919) % 50000)
        units = (length - 90) // unit
        while True:
            prompt = data.passkey_prompt(k, 0, units)
            ids = [data.BOS] + enc.encode(prompt)
            if len(ids) <= length:
                break
            units -= 1
        x = torch.tensor([ids], device="cuda")
        out = []
        for _ in range(7):
            nxt = model(input_ids=x, use_cache=False).logits[0, -1].argmax().item()
            out.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]], device="cuda")], dim=1)
        ok += enc.decode(out).strip().startswith(k + ".")
    return ok / trials


def main():
    from transformers import LlamaForCausalLM
    books = sys.argv[2]
    for path in [sys.argv[1]] + sys.argv[3:]:
        enc = bpe.Encoder(bpe.load_merges(os.path.join(path, "tokenizer.json")))
        ids = []
        for _, t in corpus.books(books, held_out=True):
            ids.extend(enc.encode(t))
        model = LlamaForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.bfloat16).cuda().eval()
        first, four = sink_mass(model, ids)
        out = {"model": path, "sink_mass_first_token": first, "sink_mass_first_four": four,
               "passkey_4096_depth0": passkey_depth0(model, enc)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
