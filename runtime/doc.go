// Package runtime runs Llama-family language models for kvbench: the model
// configuration and weights as stored (bf16, f16 or f32), loaders for Hugging
// Face safetensors directories and llama2.c checkpoints, a built-in synthetic
// model, the Backend abstraction every device implements, the KV cache, and
// the forward pass (model.go) that drives a Backend.
//
// The CPU backend lives in runtime/cpu, tokenizers in runtime/tokenizer.
package runtime
