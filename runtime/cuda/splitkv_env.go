package cuda

// The split-KV attention's settings from the environment (KVBENCH_ATTN_*,
// KVBENCH_RTB_*): each reader checks its variable and names it in its error.

import (
	"fmt"
	"math"
	"os"
	"strconv"
)

// combineEnv picks where split rows merge (fusedFor's modes).
const combineEnv = "KVBENCH_ATTN_COMBINE"

// combineOf reads $KVBENCH_ATTN_COMBINE for a backend: "" (the default),
// "fused" or "separate".
func combineOf() (string, error) {
	switch v := os.Getenv(combineEnv); v {
	case "", "fused", "separate":
		return v, nil
	default:
		return "", fmt.Errorf("cuda: %s=%q: want fused or separate", combineEnv, v)
	}
}

// minChunkEnv sets splitState.minChunk: a multiple of ChunkTokens.
const minChunkEnv = "KVBENCH_ATTN_MIN_CHUNK"

// minChunkOf reads $KVBENCH_ATTN_MIN_CHUNK (default ChunkTokens).
func minChunkOf() (int, error) { return chunkFloorOf(minChunkEnv, ChunkTokens) }

// chunkFloorOf reads $name, a least chunk: a positive multiple of
// ChunkTokens (def where unset).
func chunkFloorOf(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n%ChunkTokens != 0 {
		return 0, fmt.Errorf("cuda: %s=%q: want a positive multiple of %d", name, v, ChunkTokens)
	}
	return n, nil
}

// tcMinOf reads $KVBENCH_ATTN_TC_MIN: the least tokens a block of the
// tensor-core decode kernels takes in a chosen chunk, for every call (a
// multiple of ChunkTokens; 0 where unset: tcLeast's choice).
func tcMinOf() (int, error) { return chunkFloorOf("KVBENCH_ATTN_TC_MIN", 0) }

// wavesEnv sets splitState.waves: the chosen chunk is the one that fills
// the resident block slots that many times (1, the default: one wave).
const wavesEnv = "KVBENCH_ATTN_WAVES"

// envInt reads the whole number $name in [lo, hi] (def where unset); an
// error names the variable, its value and what it wants.
func envInt(name string, def, lo, hi int, want string) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("cuda: %s=%q: want %s", name, v, want)
	}
	return n, nil
}

// wavesOf reads $KVBENCH_ATTN_WAVES (default 1).
func wavesOf() (int, error) {
	return envInt(wavesEnv, 1, 1, 64, "a whole number of waves in [1, 64]")
}

// shortEnv sets splitState.short: chunks of at most that many tokens run the
// _short kernels where there is one (0: never).
const shortEnv = "KVBENCH_ATTN_SHORT"

// shortChunk is the default longest chunk of the _short kernels: 32/8 heads
// of 128 on the H200 (2026-12-04), 4 steps of loads in flight against 6 were
// 0.7-1.6 us faster at 512-8K tokens (chunks of 32-256), 0.5 faster at 16K
// (256) and 0.4-3 us slower from 32K (512 and longer); 32/16 and head dim 64
// gained 0.2-1.5 us at 512-8K.
const shortChunk = 256

// shortOf reads $KVBENCH_ATTN_SHORT (default shortChunk).
func shortOf() (int, error) {
	return envInt(shortEnv, shortChunk, 0, math.MaxInt, "the longest chunk in tokens (0: none)")
}

// tcMode is when lean calls run the tensor-core kernel ($KVBENCH_ATTN_TC).
type tcMode int

const (
	tcAuto tcMode = iota // useTC's choice (the default; KVBENCH_ATTN_TC unset or auto)
	tcOn                 // every call it serves
	tcOff                // none
)

// tcModeOf reads $KVBENCH_ATTN_TC: auto (or unset), on or off.
func tcModeOf() (tcMode, error) {
	switch v := os.Getenv("KVBENCH_ATTN_TC"); v {
	case "", "auto":
		return tcAuto, nil
	case "on":
		return tcOn, nil
	case "off":
		return tcOff, nil
	default:
		return 0, fmt.Errorf("cuda: KVBENCH_ATTN_TC=%q is not auto, on or off", v)
	}
}

// clusterOf reads $KVBENCH_ATTN_CLUSTER: the longest row (tokens) of a lean
// tensor-core call whose chunks run as one cluster (0, the default: never).
// Measured on the H200 (2026-12-04, docs/benchmarks.md): alone, 32/8
// decode attention at 512 tokens took 9.5 us against 10.2 (heads of 128)
// and 8.7 against 9.1 (64), level at 1K and slower from 2K; but the 8B
// shape's decode steps ran at 226 tok/s against 243-244 without: in the
// chain of a step the cluster waits for whole groups of multiprocessors
// that the kernels before it still hold.
func clusterOf() (int, error) {
	return envInt("KVBENCH_ATTN_CLUSTER", 0, 0, math.MaxInt, "a whole number of tokens, 0 for none")
}

// tcSlotsOf reads $KVBENCH_ATTN_TC_SLOTS: the most resident blocks a
// multiprocessor that the tensor-core kernel's chosen chunk fills (0: as
// many as fit); -1 where unset (tcSlotsFor's defaults).
func tcSlotsOf() (int, error) {
	return envInt("KVBENCH_ATTN_TC_SLOTS", -1, 0, 64, "a whole number of blocks in [0, 64]")
}

// tcStagesDefault is TC_ST in attention_tc.cu: the tiles of 16 tokens in a
// warp's stages of the tensor-core decode kernels.
const tcStagesDefault = 2

// tcStages is the tensor-core decode kernels' stages a warp:
// $KVBENCH_ATTN_TC_ST (2 to 4) where set, else tcStagesDefault. The
// kernels are compiled with it (KernelOptions: -DTC_ST where it is not the
// default) and their shared memory sized by it (tcSmem). Measured
// (2026-12-05, docs/benchmarks.md): two stages (one tile in flight while a
// warp computes on another; 64 KB a block at head dim 128, two blocks a
// multiprocessor, which the 170 registers a thread allow) against three:
// on an H100 0.4-1.0 us faster at 8K-64K tokens for 32/8 heads of 128 and
// of 64, level below 8K; on an H200 0.1-0.8 us faster at 512-64K for heads
// of 128, level or faster for heads of 64 and MHA rows, the 8B decode level.
func tcStages() (int, error) {
	return envInt("KVBENCH_ATTN_TC_ST", tcStagesDefault, 2, 4, "a whole number of tiles in [2, 4]")
}

// rtbBoxWords is the most words of a batched launch's table and ints that
// go by value (RtbBox): $KVBENCH_RTB_BOX_WORDS (up to 8,000: 32 KB of
// parameters), else rtbBoxLarge where NVRTC and the driver are of CUDA 12.1
// or later (kernel parameters up to 32,764 bytes), else rtBoxWords, which
// keeps the parameters under the 4 KB every CUDA version takes.
func rtbBoxWords() (int, error) {
	def := rtBoxWords
	if largeParams() {
		def = rtbBoxLarge
	}
	return envInt("KVBENCH_RTB_BOX_WORDS", def, 64, 8000, "a whole number of words in [64, 8000]")
}

// rtbBoxLarge is the batched box where large parameters are taken: 8 KB,
// 8 streams of 32/8 heads (1,608 words). Measured on the H100
// (2026-12-06, docs/benchmarks.md): 8 streams of 32/8 at 1K-32K tokens
// 8.3-9.3 µs a step faster than their upload with 2,048 words; 2 streams,
// whose ints fit 960, 0.1-0.3 µs slower for the parameters' bytes, and
// 1.7-2.0 slower with 8,000 words.
const rtbBoxLarge = 2048

// rtbXBoxWords is the most words of the larger box (RtbXBox: the batched
// kernels' and the combine's entry points ending _xb), for a
// batch whose table and ints rtbBoxWords cannot hold: $KVBENCH_RTB_XBOX_WORDS
// (0: none), else rtbXBoxDefault where rtbBoxWords' default is
// rtbBoxLarge (CUDA 12.1 or later), else none. A size at or under
// rtbBoxWords' is none.
func rtbXBoxWords() (int, error) {
	def := 0
	if largeParams() {
		def = rtbXBoxDefault
	}
	const want = "0 (none) or a whole number of words in [64, 8000]"
	n, err := envInt(rtbXBoxEnv, def, 0, 8000, want)
	if err != nil {
		return 0, err
	}
	if n > 0 && n < 64 {
		return 0, fmt.Errorf("cuda: %s=%q: want %s", rtbXBoxEnv, os.Getenv(rtbXBoxEnv), want)
	}
	if small, err := rtbBoxWords(); err != nil || n <= small {
		return 0, err
	}
	return n, nil
}

// rtbXBoxEnv names the variable that sizes the larger box.
const rtbXBoxEnv = "KVBENCH_RTB_XBOX_WORDS"

// rtbXBoxDefault is the larger box where large parameters are taken: 24 KB,
// 30 streams of 32/8 heads (203 words a stream). Measured on the H100
// (2026-12-06, docs/benchmarks.md), 32/8 heads of 128 at 1K / 4K / 16K
// tokens: 16 streams (3,312 words) 33.6 / 99.4 / 359.4 µs a step against
// 38.4 / 103.7 / 364.0 with their metadata carried by attn_rtb_put
// launches; a box of 4,096 words 0.3-1.6 µs faster, one of 8,000 0.5-1.0
// slower (its bytes cost every launch); 24 streams 47.8 / 151.7 against
// 53.7 / 156.9 carried. Batches that fit RtbBox keep it.
const rtbXBoxDefault = 6144

// largeParams says whether NVRTC and the driver are of CUDA 12.1 or later,
// whose kernels take parameters up to 32,764 bytes.
func largeParams() bool {
	v, _, err := NVRTCVersion()
	return err == nil && versionAtLeast(v, 12, 1) && versionAtLeast(DriverVersion(), 12, 1)
}

// versionAtLeast says whether a version "major.minor" is at least
// major.minor (false where it does not parse).
func versionAtLeast(v string, major, minor int) bool {
	var a, b int
	if _, err := fmt.Sscanf(v, "%d.%d", &a, &b); err != nil {
		return false
	}
	return a > major || a == major && b >= minor
}
