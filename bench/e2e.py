#!/usr/bin/env python3
"""End-to-end reference timings with Hugging Face transformers, beside
`kvbench e2e` (bench/e2e_call.sh runs both in one call on the GPU machine).

  python3 bench/e2e.py make --shape 1b|8b|qwen7b --out DIR --tokenizer tokenizer.model
      writes a random-weight Llama (qwen7b: Qwen2) of that shape (bf16 safetensors) and the
      tokenizer into DIR, made on the GPU with a fixed seed.
  python3 bench/e2e.py time --model DIR --lengths 4096,16384 [--decode 128]
      times, with SDPA attention in bf16: a prefill keeping the last logits,
      a full-logit NLL pass (the loss over every next token), greedy decoding
      one token at a time after a 512-token prompt, passkey-shaped trials of
      --passkey tokens (a prefill and 10 greedy tokens; and kvbench's protocol:
      the last --passkey-tail prompt tokens fed one at a time), peak memory;
      --profile N: device time by kernel of a prefill of N tokens.
  python3 bench/e2e.py sdpa --lengths 4096,16384
      times causal SDPA (flash) alone at the shapes of
      runtime/cuda's TestFlashPrefillTiming.

Each figure is one run after a warm-up, synchronised, in the table layout
kvbench e2e prints.
"""
import argparse
import os
import shutil
import time

import torch

SHAPES = {
    # name: (layers, hidden, heads, kv heads, intermediate)
    "1b": (16, 2048, 32, 8, 8192),
    "8b": (32, 4096, 32, 8, 14336),
    # Qwen2.5-7B's shape (q/k/v biases, GQA groups of 7), vocab 32000 as the others.
    "qwen7b": (28, 3584, 28, 4, 18944),
}


def make(args):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    layers, hidden, heads, kv, inter = SHAPES[args.shape]
    qwen = args.shape.startswith("qwen")
    conf, model = (Qwen2Config, Qwen2ForCausalLM) if qwen else (LlamaConfig, LlamaForCausalLM)
    cfg = conf(
        vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=131072,
        rope_theta=1000000.0 if qwen else 500000.0, rms_norm_eps=1e-6 if qwen else 1e-5,
        tie_word_embeddings=False, torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = model(cfg).to(torch.bfloat16)
    # Small weights keep activations in range over 32-128K tokens.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
    m.save_pretrained(args.out, safe_serialization=True, max_shard_size="50GB")
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
    print(f"made {args.shape} in {args.out}")


def sync_time(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def row(name, tokens, secs, note=""):
    print(f"| {name} | {tokens} | {secs:.3f} | {tokens / secs:.0f} | {note} |", flush=True)


@torch.no_grad()
def time_model(args):
    from transformers import AutoModelForCausalLM, DynamicCache

    m = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    vocab = m.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(1)

    def ids(n):
        return torch.randint(3, vocab, (1, n), device="cuda", generator=g)

    m(ids(256), logits_to_keep=1)  # warm-up
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("| measure | tokens | seconds | tokens/s | note |\n|---|---:|---:|---:|---|")
    for n in [int(x) for x in args.lengths.split(",")]:
        x = ids(n)
        torch.cuda.reset_peak_memory_stats()
        s, _ = sync_time(lambda: m(x, logits_to_keep=1))
        row("HF prefill (last logits)", n, s, f"peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")
        if args.nll:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                s, out = sync_time(lambda: m(x, labels=x).loss)
                row("HF NLL pass (all logits)", n, s, f"mean NLL {out.item():.3f}, peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")
            except torch.OutOfMemoryError:
                print(f"| HF NLL pass (all logits) | {n} | - | - | out of memory |")
            torch.cuda.empty_cache()
    if args.decode > 0:
        cache = DynamicCache()
        out = m(ids(512), past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1:].argmax(-1)

        def dec():
            nonlocal nxt
            for _ in range(args.decode):
                o = m(nxt, past_key_values=cache, use_cache=True)
                nxt = o.logits[:, -1:].argmax(-1)

        s, _ = sync_time(dec)
        row("HF decode (one token a step)", args.decode, s, "after a 512-token prompt")
    if args.passkey > 0:
        # kvbench's passkey trial: the prompt's last --passkey-tail tokens fed
        # one at a time after the prefill of the rest (the task's decode_tail),
        # then 10 greedy tokens; tail 0 is a prefill and 10 tokens.
        for tail in sorted({0, args.passkey_tail}):
            x = ids(args.passkey)

            def trial():
                cache = DynamicCache()
                o = m(x[:, : args.passkey - tail], past_key_values=cache, use_cache=True, logits_to_keep=1)
                for i in range(args.passkey - tail, args.passkey):
                    o = m(x[:, i : i + 1], past_key_values=cache, use_cache=True)
                nxt = o.logits[:, -1:].argmax(-1)
                for _ in range(10):  # 10 tokens generated and fed, as the task does
                    o = m(nxt, past_key_values=cache, use_cache=True)
                    nxt = o.logits[:, -1:].argmax(-1)

            torch.cuda.reset_peak_memory_stats()
            s, _ = sync_time(trial)
            what = "prefill + 10 tokens" if tail == 0 else f"prefill, {tail} prompt tokens one at a time, 10 tokens"
            row(f"HF passkey trial, tail {tail} ({what})", args.passkey, s, f"peak {torch.cuda.max_memory_allocated() / 1e9:.1f} GB")
    if args.profile > 0:
        # Device time by kernel of one prefill (last logits), torch's profiler.
        from torch.profiler import ProfilerActivity, profile

        x = ids(args.profile)
        m(x, logits_to_keep=1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            m(x, logits_to_keep=1)
            torch.cuda.synchronize()
        kern = [e for e in prof.key_averages() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        if not kern:  # an older profiler: its own table
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
            return
        allus = sum(e.self_device_time_total for e in kern)
        print(f"HF prefill {args.profile}: device time by kernel (torch profiler), total {allus / 1e3:.2f} ms")
        for e in sorted(kern, key=lambda e: -e.self_device_time_total)[:25]:
            t = e.self_device_time_total
            print(f"  {t / 1e3:9.2f} ms {100 * t / allus:5.1f} % {e.count:6d}x  {e.key[:70]}")


@torch.no_grad()
def sdpa(args):
    import contextlib

    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # flash: the FlashAttention-2 backend; cudnn: cuDNN's attention; default:
    # whatever PyTorch's dispatcher picks (what transformers gets).
    chosen = {"flash": lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION),
              "cudnn": lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION),
              "default": contextlib.nullcontext}
    backends = args.backends.split(",")
    for b in backends:
        if b not in chosen:
            raise SystemExit(f"sdpa: --backends: {b!r} is not one of {', '.join(sorted(chosen))}")
    print("| shape | L | ms | TFLOP/s |\n|---|---:|---:|---:|")
    for name, heads, kv, hd in [("1B 32/8 d64", 32, 8, 64), ("8B 32/8 d128", 32, 8, 128)]:
        for n in [int(x) for x in args.lengths.split(",")]:
            q = torch.randn(1, heads, n, hd, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(1, kv, n, hd, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(1, kv, n, hd, device="cuda", dtype=torch.bfloat16)
            for b in backends:
                label = "SDPA" if b == "flash" else f"SDPA-{b}"
                try:
                    with chosen[b]():
                        f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                        f()
                        ts = []
                        for _ in range(5):
                            s, _ = sync_time(f)
                            ts.append(s)
                except RuntimeError as e:
                    print(f"| {label} {name} | {n} | error: {str(e).splitlines()[0][:80]} | |", flush=True)
                    continue
                ts.sort()
                ms = ts[len(ts) // 2] * 1e3
                flops = 4 * n * n / 2 * hd * heads
                print(f"| {label} {name} | {n} | {ms:.2f} | {flops / ms / 1e9:.0f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("make")
    a.add_argument("--shape", choices=sorted(SHAPES), required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--tokenizer", required=True)
    a = sub.add_parser("time")
    a.add_argument("--model", required=True)
    a.add_argument("--lengths", default="4096,16384")
    a.add_argument("--nll", type=int, default=1)
    a.add_argument("--decode", type=int, default=128)
    a.add_argument("--passkey", type=int, default=0)
    a.add_argument("--passkey-tail", type=int, default=100, help="prompt tokens fed one at a time (kvbench's passkey decode_tail)")
    a.add_argument("--profile", type=int, default=0, help="also profile one prefill of this many tokens (device time by kernel)")
    a = sub.add_parser("sdpa")
    a.add_argument("--lengths", default="4096,16384,32768")
    a.add_argument("--backends", default="flash", help="comma-separated: flash, cudnn, default")
    args = p.parse_args()
    {"make": make, "time": time_model, "sdpa": sdpa}[args.cmd](args)


if __name__ == "__main__":
    main()
