// Package tokenizer turns text into token ids and back for the models the
// runtime loads.
//
// Four file formats are read, each by a small hand-written parser that
// returns an error naming the file for any malformed input and never panics:
//
//   - SentencePiece .model files (a protobuf ModelProto), BPE model type, as
//     used by Llama-2 and its derivatives: see [LoadSentencePiece].
//   - llama2.c tokenizer.bin files (max token length, then score, length and
//     bytes per token): see [LoadLlama2C].
//   - Hugging Face tokenizer.json files whose model is BPE, either byte-level
//     (GPT-2, Llama-3, Qwen2) or SentencePiece-style with byte fallback: see
//     [LoadHFJSON].
//   - The tokenizer a GGUF model file embeds, SentencePiece ("llama") or
//     byte-level BPE ("gpt2"), built through [NewSentencePiece] and
//     [NewByteLevelBPE]: see [LoadGGUF].
//
// [Load] picks the format from the file name and, failing that, the content.
// All of them implement [Tokenizer] and are safe for concurrent use. Encode
// never adds BOS or EOS; callers prepend [Tokenizer.BOS] themselves. Decode
// gives whole text (control tokens dropped, the encoder's leading space
// removed); Piece gives the bytes of one token for streaming, as llama2.c
// prints them. Every BPE variant merges with a priority queue over a linked
// list of symbols, so encoding is O(n log n) in the text length; the
// SentencePiece encoder also cuts the text at characters no piece contains
// (newlines for Llama-2), which keeps the queue short without changing the
// result.
package tokenizer
