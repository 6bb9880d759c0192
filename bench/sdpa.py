#!/usr/bin/env python3
"""Time PyTorch's scaled_dot_product_attention on kvbench's decode shapes.

One query token, batch 1 (--batch B: B sequences of the same length, the
batched reference beside `kvbench kernels --streams B`), bf16 Q/K/V (K and V
[B, kv_heads, tokens, dim]),
GQA through enable_gqa=True. Each (backend, heads, length) cell is timed the
way `kvbench kernels` times its kernels: warm-up, CUDA events around every
run, runs queued behind a GPU sleep so the host's launch latency stays out of
the timed region, inputs rotated among copies that together exceed the L2
cache, the median of many runs. Rows use the column layout of
`kvbench kernels`, so both tables read side by side; %copy is against a
device-to-device copy measured here. Tokens N are N keys, where kvbench
kernels' N is the step after an N-token prompt, over N+1 keys: for the same
work time SDPA at N+1 (bench/decode_attn_call.sh prints both).

--rows R times a prompt chunk instead, beside `kvbench kernels --rows R`:
the last R query rows of an N-token prompt (all N where R >= N) over its N
keys, causal (the mask aligned to the last key: causal_lower_right where
R < N), K and V repeated to the query heads before the timed region. Its
rows print GFLOP (4 x dim x query heads x the query-key pairs the rows
see) and TFLOP/s instead of bytes.

    python3 bench/sdpa.py --heads 32/8,32/32 --lengths 4096,16384,32768,65536,131072
    python3 bench/sdpa.py --heads 32/8 --dim 64 --lengths 8192,32768 --rows 8192
"""

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HEADER = "impl     policy        heads   tokens  median_us    min_us   MB_moved     GB/s  %copy  check"
ROWS_HEADER = "impl     policy        heads   tokens     rows  median_us    min_us    GFLOP  TFLOP/s  check"
BACKENDS = ["default", "flash", "efficient", "cudnn", "math"]


def backend_ctx(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(
        {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH,
        }[name]
    )


class Timer:
    """Per-run CUDA-event timing behind a GPU sleep (see the module doc)."""

    def __init__(self, batch=50):
        self.batch = batch
        self.events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(batch)
        ]
        self.sleep_ns = 2_000_000

    def run(self, fn, n_sets, iters, warmup=3):
        for i in range(max(warmup, n_sets)):
            fn(i)
        torch.cuda.synchronize()
        out, run, retries = [], 0, 0
        while run < iters:
            b = min(self.batch, iters - run)
            torch.cuda._sleep(int(self.sleep_ns * 2))  # cycles; ~2 GHz clocks at most
            t0 = time.perf_counter_ns()
            for i in range(b):
                s, e = self.events[i]
                s.record()
                fn(run + i)
                e.record()
            host = time.perf_counter_ns() - t0
            torch.cuda.synchronize()
            ms = [self.events[i][0].elapsed_time(self.events[i][1]) for i in range(b)]
            if host > self.sleep_ns * 0.8 and retries < 4:
                self.sleep_ns, retries = host * 2, retries + 1
                continue
            out += ms
            run += b
        return out


def copy_bandwidth(timer):
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = timer.run(lambda i: dst.copy_(src), 1, 20)
    del src, dst
    return 2 * n / (statistics.median(ms) * 1e-3)


def reference(q, k, v, kv_heads):
    """float64 attention of the query heads of KV heads kv_heads: [heads, dim]."""
    H, KV, D = q.shape[1], k.shape[1], q.shape[3]
    G = H // KV
    rows = []
    for h in kv_heads:
        qh = q[0, h * G : (h + 1) * G, 0].double()  # [G, D]
        kh, vh = k[0, h].double(), v[0, h].double()  # [N, D]
        p = torch.softmax(qh @ kh.T / math.sqrt(D), dim=-1)
        rows.append(p @ vh)
    return torch.cat(rows)


def time_backend(timer, be, call, n_sets, iters, row):
    """Time call under SDPA backend be (default: PyTorch's choice) and return
    the runs' milliseconds and one call's output; where the backend refuses
    the shape, print row with the reason and return None."""
    try:
        if be == "default":
            ms = timer.run(call, n_sets, iters)
            out = call(0)
        else:
            with backend_ctx(be):
                ms = timer.run(call, n_sets, iters)
                out = call(0)
        torch.cuda.synchronize()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[0][:60]
        print(f"{row}  n/a: {msg}")
        torch.cuda.synchronize()
        return None
    return ms, out


def reference_rows(q, k, v, heads, rows):
    """float64 causal attention of query heads heads in rows rows of q
    ([1, H, R, D]) over k, v ([1, H, N, D]), the mask aligned to the last
    key: [len(rows) * len(heads), D]."""
    R, N, D = q.shape[2], k.shape[2], q.shape[3]
    out = []
    for r in rows:
        for h in heads:
            s = (q[0, h, r].double() @ k[0, h].double().T) / math.sqrt(D)
            s[N - R + r + 1 :] = -math.inf
            out.append(torch.softmax(s, dim=-1) @ v[0, h].double())
    return torch.stack(out)


def time_rows(args, timer, H, KV, N, hk, gen):
    """Time and check SDPA on the last args.rows rows of an N-token prompt."""
    from torch.nn.attention.bias import causal_lower_right

    D, B = args.dim, args.batch
    R = min(args.rows, N)
    G = H // KV
    q = uniform_bf16((B, H, R, D), gen)
    k = uniform_bf16((B, KV, N, D), gen).repeat_interleave(G, dim=1)
    v = uniform_bf16((B, KV, N, D), gen).repeat_interleave(G, dim=1)
    mask = None if R == N else causal_lower_right(R, N)
    flops = 4 * D * H * B * (R * (N - R) + R * (R + 1) // 2)

    def call(i):
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    label = hk if B == 1 else f"{B}x{hk}"
    for be in args.backends.split(","):
        row = f"{'sdpa':<8} {be:<12} {label:>6} {N:>8} {R:>8}"
        res = time_backend(timer, be, call, 1, args.iters, row)
        if res is None:
            continue
        ms, out = res
        check = "-"
        if not args.no_check:
            rows = sorted({0, R // 2, R - 1})
            heads = [h * G for h in ([0, KV - 1] if KV > 1 else [0])]
            ref = reference_rows(q, k, v, heads, rows)
            got = torch.stack([out[0, h, r] for r in rows for h in heads]).double()
            check = f"relerr={((got - ref).norm() / ref.norm()).item():.1e}"
        med, best = statistics.median(ms) * 1e3, min(ms) * 1e3
        print(f"{row} {med:10.1f} {best:9.1f} {flops / 1e9:8.2f} {flops / (med * 1e-6) / 1e12:8.1f}  {check}", flush=True)
    del q, k, v
    torch.cuda.empty_cache()


def uniform_bf16(shape, gen):
    return (torch.rand(shape, generator=gen, device="cuda") * 2 - 1).to(torch.bfloat16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="4096,16384,32768,65536,131072")
    ap.add_argument("--heads", default="32/8")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--backends", default="default,flash,efficient,cudnn")
    ap.add_argument("--batch", type=int, default=1, help="sequences of the same length attended in one call (the heads column then reads Bx<heads>)")
    ap.add_argument("--rows", type=int, default=1, help="1: a decode step; more: the last ROWS query rows of the prompt, causal (see the module doc)")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    if args.batch < 1:
        sys.exit(f"sdpa.py: --batch {args.batch}: want 1 or more")
    if args.rows < 1:
        sys.exit(f"sdpa.py: --rows {args.rows}: want 1 (a decode step) or more (a prompt chunk)")
    if not torch.cuda.is_available():
        sys.exit("sdpa.py: no CUDA device visible to PyTorch")
    dev = torch.cuda.get_device_properties(0)
    l2 = getattr(dev, "L2_cache_size", 50 << 20)
    timer = Timer()
    bw = copy_bandwidth(timer)
    print(f"# device: {dev.name}, {dev.multi_processor_count} SMs, {l2 >> 20} MB L2; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    print(f"# device-to-device copy (tensor.copy_, 1 GiB, read+write bytes): {bw / 1e9:.0f} GB/s")
    print(HEADER if args.rows == 1 else ROWS_HEADER)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1)
    D, B = args.dim, args.batch
    for hk in args.heads.split(","):
        H, KV = (int(x) for x in hk.split("/"))
        for N in (int(x) for x in args.lengths.split(",")):
            if args.rows > 1:
                time_rows(args, timer, H, KV, N, hk, gen)
                continue
            kv_bytes = 2 * B * KV * N * D * 2
            n_sets = min(16, max(1, math.ceil(3 * l2 / kv_bytes)))
            sets = [
                (uniform_bf16((B, H, 1, D), gen), uniform_bf16((B, KV, N, D), gen), uniform_bf16((B, KV, N, D), gen))
                for _ in range(n_sets)
            ]
            gqa = H != KV
            for be in args.backends.split(","):

                def call(i):
                    q, k, v = sets[i % n_sets]
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)

                label = hk if B == 1 else f"{B}x{hk}"
                row = f"{'sdpa':<8} {be:<12} {label:>6} {N:>8}"
                res = time_backend(timer, be, call, n_sets, args.iters, row)
                if res is None:
                    continue
                ms, out = res
                check = "-"
                if not args.no_check:
                    q, k, v = sets[0]
                    heads = [0, KV - 1] if KV > 1 else [0]
                    ref = reference(q, k, v, heads)
                    G = H // KV
                    got = torch.cat([out[0, h * G : (h + 1) * G, 0] for h in heads]).double()
                    err = ((got - ref).norm() / ref.norm()).item()
                    check = f"relerr={err:.1e}"
                med, best = statistics.median(ms) * 1e3, min(ms) * 1e3
                gbs = kv_bytes / (med * 1e-6) / 1e9
                print(f"{row} {med:10.1f} {best:9.1f} {kv_bytes / 1e6:10.1f} {gbs:8.0f} {100 * gbs * 1e9 / bw:6.1f}  {check}", flush=True)
            del sets
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
