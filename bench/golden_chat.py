"""Prints transformers' apply_chat_template output for the chat templates
in runtime/chat/testdata (Llama-3.1, Qwen2.5 and Mistral v0.3 instruct, as
their tokenizer_config.json ship them) on the conversations of
runtime/chat/models_test.go, one JSON object per line: file, case, text.

Usage: python3 bench/golden_chat.py > runtime/chat/testdata/transformers_golden.jsonl
       go test ./runtime/chat/ -run Golden   (or KVBENCH_CHAT_GOLDEN=other.jsonl)

Needs transformers and tokenizers; works offline: each template is set on
a one-token tokenizer built in memory with the file's bos_token and
eos_token, so only the template is exercised (not a model's vocabulary).
--jinja2 renders with plain jinja2 configured as transformers configures it
(trim_blocks, lstrip_blocks, loopcontrols, raise_exception, tojson with
ensure_ascii=False) where transformers is not installed: a weaker check.
Keep the cases in step with modelCases in models_test.go.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "runtime", "chat", "testdata")

FILES = [
    "llama-3.1-8b-instruct.tokenizer_config.json",
    "qwen2.5-7b-instruct.tokenizer_config.json",
    "mistral-7b-instruct-v0.3.tokenizer_config.json",
]

CASES = [
    ("system_user", [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the pass key?"}], True),
    ("user", [{"role": "user", "content": "Hello, world."}], True),
    ("multi_turn", [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " Hi"},
                    {"role": "assistant", "content": "Hello! "}, {"role": "user", "content": "Bye"}], False),
]


def with_transformers(cfg):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    special = {}
    for key in ("bos_token", "eos_token"):
        if cfg.get(key):
            special[key] = cfg[key]
    vocab = {"<unk>": 0}
    for v in special.values():
        vocab.setdefault(v, len(vocab))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), unk_token="<unk>", **special)
    tok.chat_template = cfg["chat_template"]

    def render(messages, gen):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    return render


def with_jinja2(cfg):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    tmpl = env.from_string(cfg["chat_template"])
    special = {k: cfg[k] for k in ("bos_token", "eos_token") if cfg.get(k)}

    def render(messages, gen):
        return tmpl.render(messages=messages, add_generation_prompt=gen, **special)
    return render


def main():
    engine = with_jinja2 if "--jinja2" in sys.argv[1:] else with_transformers
    for name in FILES:
        with open(os.path.join(TESTDATA, name), encoding="utf-8") as f:
            cfg = json.load(f)
        render = engine(cfg)
        for case, messages, gen in CASES:
            text = render(messages, gen)
            print(json.dumps({"file": name, "case": case, "text": text}, ensure_ascii=False))


if __name__ == "__main__":
    main()
