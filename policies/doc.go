// Package policies holds kvbench's KV-cache policies (full, window,
// streamingllm, h2o, tova, snapkv, pyramidkv, quest, oracle, random), their
// registry and their accounting. A policy is a runtime.Hook: inside the
// model's layer loop it evicts tokens from the cache (real memory savings:
// freed pages are reused) or selects the tokens attention reads (bandwidth
// savings), through backend primitives only, so the same policy code drives
// every backend. The algorithms follow ../shared/docs/POLICIES.md; each file
// names any deviation.
package policies
