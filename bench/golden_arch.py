"""Makes runtime/testdata/arch/<name>/: tiny random models of each
architecture feature kvbench reads (RoPE scalings, Qwen3, Mistral's sliding
window, Phi-3 with longrope), saved by transformers, and their float32
logits on a fixed prompt, which runtime's TestArchGolden checks the CPU
(and runtime/cuda's TestArchGoldenGPU the GPU) against.

Usage: python3 bench/golden_arch.py [OUT_DIR] [NAME ...]
(OUT_DIR defaults to runtime/testdata/arch; NAMEs default to every model.)
Needs torch, transformers (5.x; 4.5x works where noted) and safetensors; runs
on the CPU in float32 with eager attention. Regenerate the files with this
script, never edit them by hand.

Each folder holds config.json and model.safetensors as save_pretrained wrote
them (float32, about 0.5 MB), and golden.json:
  note               versions and how the file was made
  ids                the prompt (48 token ids)
  logits             [48][vocab] float32 logits of every position, the whole
                     prompt in one forward call
  inv_freq           the rotary embedding's inverse frequencies after that
                     call (dynamic scaling grows them with the length), or null
  attention_scaling  the factor on cos/sin (yarn, longrope), or null

The weights are drawn larger than transformers' initialisation (std
1.5/sqrt(fan_in), norm weights around 1, a unit-variance embedding) so that
attention is peaked and the position encoding moves the logits: with the
default std of 0.02 every score is near 0 and RoPE would not show.
"""
import json
import math
import os
import sys

import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config,
                          Phi3ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

V5 = int(transformers.__version__.split(".")[0]) >= 5
VOCAB = 128
PROMPT_LEN = 48
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)


def rope(theta, scaling):
    """The RoPE arguments of a config: rope_parameters (transformers 5, theta
    inside) or rope_theta and rope_scaling (transformers 4)."""
    if V5:
        p = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            p.update(scaling)
        return {"rope_parameters": p}
    return {"rope_theta": theta, "rope_scaling": scaling}


SHORT = [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0]
LONG = [1.2, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0]

# name: (config class, model class, the config's own arguments). The prompt
# (48 tokens) passes every original context below that changes frequencies
# with the length (dynamic: 32, longrope: 16), and Mistral's window (8).
MODELS = {
    "linear": (LlamaConfig, LlamaForCausalLM,
               dict(max_position_embeddings=256, **rope(10000.0, {"rope_type": "linear", "factor": 4.0}))),
    "dynamic": (LlamaConfig, LlamaForCausalLM,
                dict(max_position_embeddings=32, **rope(10000.0, {"rope_type": "dynamic", "factor": 2.0}))),
    "llama3": (LlamaConfig, LlamaForCausalLM,
               dict(max_position_embeddings=512, **rope(10000.0, {
                   "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64}))),
    # max_position_embeddings = factor * original: transformers 4.5x (which
    # then takes the ratio as the factor) and 5 (the given factor) agree.
    "yarn": (LlamaConfig, LlamaForCausalLM,
             dict(max_position_embeddings=256, **rope(10000.0, {
                 "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}))),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM,
              dict(head_dim=32, max_position_embeddings=128, use_sliding_window=False, tie_word_embeddings=True,
                   **rope(1000000.0, None))),
    "mistral-window": (MistralConfig, MistralForCausalLM,
                       dict(max_position_embeddings=128, sliding_window=8, **rope(10000.0, None))),
    # Phi-3 keeps the original context at the top level (transformers 5 also
    # in rope_parameters; transformers 4 wants exactly type, short_factor and
    # long_factor); no factor: the ratio 64/16 gives the attention factor.
    "phi3-longrope": (Phi3Config, Phi3ForCausalLM,
                      dict(max_position_embeddings=64, original_max_position_embeddings=16, sliding_window=None,
                           **rope(10000.0, {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG,
                                            "original_max_position_embeddings": 16} if V5 else
                                  {"type": "longrope", "short_factor": SHORT, "long_factor": LONG}))),
}


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # RMSNorm weights (layers, q/k norms, final)
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[1])))


def load(cls, d):
    try:
        return cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    except TypeError:  # transformers 4 before dtype=
        return cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()


def short(v):
    return float("%.8g" % v)


def make(out, name, seed):
    cfg_cls, model_cls, own = MODELS[name]
    cfg = cfg_cls(**{**COMMON, **own})
    torch.manual_seed(seed)
    model = model_cls(cfg).to(torch.float32)
    init_weights(model, seed)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d)
    for extra in ("generation_config.json",):  # not read by the test; keep the folder small
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        sys.exit(f"{name}: save_pretrained wrote no model.safetensors in {d}")

    m = load(model_cls, d)  # what is on disk is what is checked
    g = torch.Generator().manual_seed(17)
    ids = [1] + torch.randint(3, VOCAB, (PROMPT_LEN - 1,), generator=g).tolist()
    with torch.no_grad():
        logits = m(torch.tensor([ids])).logits[0].float()
    rot = getattr(m.model, "rotary_emb", None)
    inv = getattr(rot, "inv_freq", None)
    att = getattr(rot, "attention_scaling", None)
    res = {
        "note": "bench/golden_arch.py: transformers %s, torch %s, CPU float32, eager attention; "
                "regenerate with the script, never edit by hand" % (transformers.__version__, torch.__version__),
        "name": name,
        "ids": ids,
        "logits": [[short(v) for v in row] for row in logits.tolist()],
        "inv_freq": None if inv is None else [float(v) for v in inv.float().tolist()],
        "attention_scaling": None if att is None else float(att),
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(res, f)
    size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
    print("%-15s %7.1f KB  logits spread %.3g  attention_scaling %s" % (name, size / 1024, logits.std().item(), att))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runtime/testdata/arch"
    names = sys.argv[2:] or list(MODELS)
    for n in names:
        if n not in MODELS:
            sys.exit(f"unknown model {n!r} (have {', '.join(MODELS)})")
    torch.backends.cuda.matmul.allow_tf32 = False
    for i, n in enumerate(MODELS):
        if n in names:
            make(out, n, 1000 + i)


if __name__ == "__main__":
    main()
