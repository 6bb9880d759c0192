"""Regenerates runtime/cpu/testdata/gutenberg25m_fp32.json: reference logits
of gutenberg-llama-25m from Hugging Face transformers in true float32 (CPU,
eager attention, no TF32), for the prompts of the shared golden.json.

Usage: python3 bench/golden_fp32.py MODEL_DIR OUT_JSON
(MODEL_DIR holds config.json, model.safetensors and the shared golden.json.)
"""
import json
import sys

import torch
from transformers import LlamaForCausalLM

d, out = sys.argv[1], sys.argv[2]
torch.backends.cuda.matmul.allow_tf32 = False
g = json.load(open(d + "/golden.json"))
m = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()


def run(ids):
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].double()


res = {"note": "transformers %s, torch %s, CPU float32, eager attention; regenerate with bench/golden_fp32.py"
       % (__import__("transformers").__version__, torch.__version__), "cases": []}
for c in g["cases"]:
    lg = run(c["ids"])
    lp = torch.log_softmax(lg, -1)
    res["cases"].append({
        "ids": c["ids"],
        "argmax": lg.argmax(-1).tolist(),
        "logits_first16": [[float("%.7g" % v) for v in row] for row in lg[:, :16].tolist()],
        "last_logits": [float("%.7g" % v) for v in lg[-1].tolist()],
        "target_logprob": [lp[i, c["ids"][i + 1]].item() for i in range(len(c["ids"]) - 1)],
    })
ids = g["heldout_1024"]["ids"]
lp = torch.log_softmax(run(ids), -1)
res["heldout_1024"] = {"ids": ids, "nll_sum": -sum(lp[i, ids[i + 1]].item() for i in range(len(ids) - 1))}
p = g["greedy"]["prompt_ids"]
seq = list(p)
with torch.no_grad():
    for _ in range(len(g["greedy"]["ids"]) - len(p)):
        seq.append(int(m(torch.tensor([seq])).logits[0, -1].argmax()))
res["greedy"] = {"prompt_ids": p, "ids": seq}
json.dump(res, open(out, "w"))
print("wrote", out, "heldout nll", res["heldout_1024"]["nll_sum"], "greedy same as shared:", seq == g["greedy"]["ids"])
