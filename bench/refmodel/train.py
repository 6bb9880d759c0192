"""Trains kvbench's reference model on one GPU (see README.md in this folder).

    python3 bench/refmodel/train.py --books DIR --tokenizer tokenizer.json --out DIR [--seconds 420]

DIR holds the Project Gutenberg novels (corpus.py says which four are held out).
The model is a Llama (transformers' LlamaForCausalLM, so every loader reads it);
it is trained for a wall-clock budget on batches of about 131K tokens, half plain
text and half retrieval sequences (data.py), with the sequence length growing
512 -> 1K -> 2K -> 4K over the run, then saved in bf16 with its tokenizer and
measured (held-out perplexity, passkey accuracy at 1K-8K) in train_eval.json.
"""

import argparse
import array
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import data  # noqa: E402

TOKENS_PER_STEP = 131072


EDGES = (0.12, 0.30, 0.55)  # where 1K, 2K and 4K tokens start, as fractions of the budget


def curriculum(frac):
    """The sequence length at a fraction of the time budget."""
    for edge, length in zip(EDGES, (512, 1024, 2048)):
        if frac < edge:
            return length
    return 4096


def worker(maker, seed, requests, results):
    maker.rng = random.Random(seed)
    while True:
        length = requests.get()
        if length is None:
            return
        ids, ws = maker.batch(length, TOKENS_PER_STEP // length)
        flat_ids = array.array("i", [t for row in ids for t in row])
        flat_ws = array.array("f", [v for row in ws for v in row])
        results.put((length, len(ids), flat_ids.tobytes(), flat_ws.tobytes()))


def build(args, vocab):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads, max_position_embeddings=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=data.BOS, eos_token_id=data.EOS,
        attention_bias=False, mlp_bias=False)
    return LlamaForCausalLM(cfg)


def weighted_loss(model, ids, ws):
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1).long(), reduction="none")
    w = ws[:, 1:].reshape(-1).float()
    return (ce * w).sum() / w.sum()


@torch.no_grad()
def heldout_ppl(model, enc, books, window, limit=64):
    """Perplexity of the held-out novels over windows of window tokens
    (each starting with BOS), up to limit windows."""
    ids = []
    for _, t in books:
        ids.extend(enc.encode(t))
    nll, n = 0.0, 0
    for k in range(min(limit, len(ids) // window)):
        x = torch.tensor([[data.BOS] + ids[k * window:(k + 1) * window]], device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
        nll += F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        n += window
    return math.exp(nll / n)


@torch.no_grad()
def passkey_acc(model, enc, length, trials, seed):
    """kvbench's passkey prompt fitted to length tokens (filler sentences
    split around the key at a random depth), greedy answer, first digits."""
    rng = random.Random(seed)
    unit = len(enc.encode(data.PASSKEY_FILLER + " "))
    ok = 0
    for _ in range(trials):
        key = rng.randint(1, 50000)
        k = str(key)
        units = max(0, (length - 90) // unit)
        while True:
            before = int(round(rng.random() * units))
            prompt = data.passkey_prompt(key, before, units - before)
            ids = [data.BOS] + enc.encode(prompt)
            if len(ids) <= length or units == 0:
                break
            units -= 1
        x = torch.tensor([ids], device="cuda")
        out = []
        for _ in range(8):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                nxt = model(input_ids=x, use_cache=False).logits[0, -1].argmax().item()
            out.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]], device="cuda")], dim=1)
        text = enc.decode(out)
        digits = ""
        for ch in text:
            if ch.isdigit():
                digits += ch
            elif digits:
                break
        ok += digits == k
    return ok / trials


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--books", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=420)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--edges", default="0.10,0.25,0.45", help="where 1K, 2K and 4K start (fractions of the budget)")
    args = ap.parse_args()
    global EDGES
    EDGES = tuple(float(x) for x in args.edges.split(","))
    t0 = time.time()
    torch.manual_seed(args.seed)
    enc = bpe.Encoder(bpe.load_merges(args.tokenizer))
    maker = data.Maker(enc, corpus.books(args.books), args.seed)
    held = corpus.books(args.books, held_out=True)
    print(f"tokenized {sum(len(x) for x in maker.ids)} training tokens in {time.time() - t0:.1f}s", flush=True)

    ctx = mp.get_context("fork")
    requests, results = ctx.Queue(), ctx.Queue(maxsize=8)
    procs = [ctx.Process(target=worker, args=(maker, args.seed * 1000 + i, requests, results), daemon=True)
             for i in range(args.workers)]
    for p in procs:
        p.start()

    model = build(args, len(enc.vocab)).cuda()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)
    print(f"model: {params / 1e6:.2f}M parameters", flush=True)

    start = time.time()
    frac = 0.0
    inflight = 0
    for _ in range(args.workers + 2):
        requests.put(curriculum(0.0))
        inflight += 1
    step, warm, log = 0, 200, []
    while frac < 1.0:
        length, rows, ids, ws = results.get()
        ids = torch.frombuffer(bytearray(ids), dtype=torch.int32).view(rows, length).long()
        ws = torch.frombuffer(bytearray(ws), dtype=torch.float32).view(rows, length)
        inflight -= 1
        requests.put(curriculum(frac))
        inflight += 1
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, ws = ids.cuda(non_blocking=True), ws.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = weighted_loss(model, ids, ws)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        frac = (time.time() - start) / args.seconds
        if step % 100 == 0:
            l = loss.item()
            log.append({"step": step, "seconds": round(time.time() - start, 1), "length": length, "loss": round(l, 4)})
            print(f"step {step} t={time.time() - start:.0f}s len={length} lr={lr:.2e} loss={l:.3f}", flush=True)
    for _ in procs:
        requests.put(None)
    train_s = time.time() - start

    os.makedirs(args.out, exist_ok=True)
    model.eval()
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    model.float()
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(bpe.tokenizer_json(list(enc.rank)), f, ensure_ascii=False)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(bpe.tokenizer_config(), f, indent=1)
    print(f"saved after {step} steps, {train_s:.0f}s", flush=True)

    ev = {"steps": step, "train_seconds": round(train_s, 1), "parameters": params,
          "tokens_per_step": TOKENS_PER_STEP, "args": vars(args), "device": torch.cuda.get_device_name(),
          "torch": torch.__version__, "loss_log": log}
    model.to(torch.bfloat16)  # as saved
    for w in (1024, 4096):
        ev[f"heldout_ppl_{w}"] = round(heldout_ppl(model, enc, held, w), 2)
        print(f"held-out perplexity at {w}: {ev[f'heldout_ppl_{w}']}", flush=True)
    for n in (1024, 2048, 4096, 8192):
        ev[f"passkey_acc_{n}"] = passkey_acc(model, enc, n, 20, 7)
        print(f"passkey {n}: {ev[f'passkey_acc_{n}']}", flush=True)
    with open(os.path.join(args.out, "train_eval.json"), "w") as f:
        json.dump(ev, f, indent=1)


if __name__ == "__main__":
    main()
