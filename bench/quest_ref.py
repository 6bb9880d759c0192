#!/usr/bin/env python3
"""Time a Quest decode step written in PyTorch, beside `kvbench kernels --split --policies quest`.

What a user without kvbench would run for Quest (Tang et al., 2024) on one
decode token, batch 1: each page of --page tokens keeps the channel-wise
minimum and maximum of its keys; a query head's bound on a page is
sum_i max(q_i min_i, q_i max_i) over the head's KV head's page; torch.topk
picks the budget/page - 1 best pages but the last, the last page is added,
and SDPA attends over the chosen pages' tokens (gathered). Three rows per
(heads, length), in the column layout of `kvbench kernels`:

  quest/sel   the bounds and the top-k (the chosen pages, on the device)
  quest/att   the gather of the chosen tokens and SDPA over them
  quest       the whole step

Bounds are float32 (kvbench's are double, for parity with its CPU runtime),
keys and values bf16; lengths should be multiples of --page (a last page's
missing tokens are read as the last token again). Timing: bench/sdpa.py's Timer (events around each run,
queued behind a GPU sleep, inputs rotated past the L2).

    python3 bench/quest_ref.py --heads 32/8 --lengths 4096,32768,131072
"""

import argparse
import math
import statistics
import sys

import torch
import torch.nn.functional as F

from sdpa import HEADER, Timer, uniform_bf16


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="4096,32768,131072")
    ap.add_argument("--heads", default="32/8")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--budget", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    if args.page < 1 or args.budget < args.page:
        sys.exit(f"quest_ref.py: --page {args.page} --budget {args.budget}: want 1 <= page <= budget")
    if not torch.cuda.is_available():
        sys.exit("quest_ref.py: no CUDA device visible to PyTorch")
    dev = torch.cuda.get_device_properties(0)
    l2 = getattr(dev, "L2_cache_size", 50 << 20)
    print(f"# device: {dev.name}; torch {torch.__version__}; Quest page {args.page}, budget {args.budget} tokens")
    print(HEADER)
    timer = Timer()
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1)
    D, S = args.dim, args.page
    K = -(-args.budget // S)  # pages attended, the last one included
    for hk in args.heads.split(","):
        H, KV = (int(x) for x in hk.split("/"))
        G = H // KV
        for N in (int(x) for x in args.lengths.split(",")):
            P = -(-N // S)
            if P <= K:
                print(f"# {hk} {N}: {P} pages, not more than the {K} attended: Quest attends to all")
                continue
            kv_bytes = 2 * KV * N * D * 2
            n_sets = min(16, max(1, math.ceil(3 * l2 / kv_bytes)))
            sets = []
            for _ in range(n_sets):
                k, v = uniform_bf16((KV, N, D), gen), uniform_bf16((KV, N, D), gen)
                pad = torch.zeros((KV, P * S - N, D), dtype=k.dtype, device="cuda")
                kp = torch.cat([k, pad], 1).view(KV, P, S, D).float()
                # The last page's padding must not widen its bounds: repeat its first key there.
                if P * S > N:
                    kp[:, P - 1, N - (P - 1) * S :] = kp[:, P - 1, :1]
                sets.append((uniform_bf16((H, D), gen), k, v, kp.amin(2), kp.amax(2)))
            last = torch.tensor([P - 1], device="cuda")
            tok = torch.arange(S, device="cuda")
            head_kv = torch.arange(H, device="cuda") // G

            def select(i):
                q, _, _, mn, mx = sets[i % n_sets]
                qf = q.float().view(KV, G, 1, D)
                bound = torch.maximum(qf * mn.view(KV, 1, P, D), qf * mx.view(KV, 1, P, D)).sum(-1)  # [KV, G, P]
                top = bound.view(H, P)[:, : P - 1].topk(K - 1, dim=-1).indices
                return torch.cat([top, last.expand(H, 1)], 1)  # [H, K]

            def attend(i, pages):
                q, k, v, _, _ = sets[i % n_sets]
                idx = (pages.unsqueeze(-1) * S + tok).view(H, K * S).clamp_(max=N - 1)
                kh = k[head_kv.unsqueeze(1), idx]  # [H, K*S, D]
                vh = v[head_kv.unsqueeze(1), idx]
                return F.scaled_dot_product_attention(q.view(H, 1, D), kh, vh)

            chosen = [select(i) for i in range(n_sets)]
            rows = [
                ("quest/sel", select),
                ("quest/att", lambda i: attend(i, chosen[i % n_sets])),
                ("quest", lambda i: attend(i, select(i))),
            ]
            for name, fn in rows:
                ms = timer.run(fn, n_sets, args.iters)
                med, best = statistics.median(ms) * 1e3, min(ms) * 1e3
                print(f"{'torch':<8} {name:<10} {hk:>6} {N:>8} {med:10.1f} {best:9.1f} {kv_bytes / 1e6:10.1f}        -      -  -", flush=True)
            del sets, chosen
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
