package cuda

import (
	"fmt"
	"os"
	"strings"
	"sync"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// KernelOptions are the NVRTC options kvbench's kernels are compiled with,
// besides the architecture: $KVBENCH_NVRTC_OPTS (space-separated) when
// set, else -lineinfo (for compute-sanitizer's reports); the trace's
// build; the tensor-core decode kernels' stages where they are not the
// default (tcStages); the batched launches' box where it is not the
// default (rtbBoxWords), and its larger box where there is one
// (rtbXBoxWords). NVRTC's default dialect (C++17 since CUDA 12) is used.
func KernelOptions() []string {
	opts := []string{"-lineinfo"}
	if s, ok := os.LookupEnv("KVBENCH_NVRTC_OPTS"); ok {
		opts = strings.Fields(s)
	}
	if traceBuild() {
		opts = append(opts, "-DKVB_TRACE=1")
	}
	if n, err := tcStages(); err == nil && n != tcStagesDefault {
		opts = append(opts, fmt.Sprintf("-DTC_ST=%d", n))
	}
	if n, err := rtbBoxWords(); err == nil && n != rtBoxWords {
		opts = append(opts, fmt.Sprintf("-DRTB_BOX_WORDS=%d", n))
	}
	if n, err := rtbXBoxWords(); err == nil && n > 0 {
		opts = append(opts, fmt.Sprintf("-DRTB_XBOX_WORDS=%d", n))
	}
	return opts
}

// Kernels is kvbench's kernel module (package kvbench/cuda's sources)
// compiled and loaded on one device.
type Kernels struct {
	D    *Device
	Mods Modules // the source's parts (Device.LoadParts)

	mu  sync.Mutex
	fns map[string]*Function
}

// LoadKernels compiles (or takes from the cache) and loads the kernels.
func LoadKernels(d *Device) (*Kernels, error) {
	m, err := d.LoadParts("kvbench.cu", kernelsrc.Source(), KernelOptions(), kernelsrc.Parts)
	if err != nil {
		return nil, err
	}
	return &Kernels{D: d, Mods: m, fns: map[string]*Function{}}, nil
}

// Func returns the kernel name, looked up once.
func (k *Kernels) Func(name string) (*Function, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f, ok := k.fns[name]; ok {
		return f, nil
	}
	f, err := k.Mods.Function(name)
	if err != nil {
		return nil, err
	}
	k.fns[name] = f
	return f, nil
}

func (k *Kernels) launch(name string, grid, block Dim3, smem int, args ...any) error {
	f, err := k.Func(name)
	if err != nil {
		return err
	}
	return f.Launch(grid, block, smem, args...)
}

// FillRandomBF16 writes n pseudo-random bf16 values uniform in
// [-scale, scale) at p, determined by seed.
func (k *Kernels) FillRandomBF16(p Ptr, n int64, seed uint64, scale float32) error {
	blocks := int(min((n+255)/256, int64(k.D.SMs*32)))
	return k.launch("fill_bf16", Dim3{blocks, 1, 1}, Dim3{256, 1, 1}, 0, p, uint64(n), seed, scale)
}

// PageMinMax writes the per-page channel minimum and maximum of the keys K
// [kvHeads, tokens, headDim] into mn and mx [kvHeads, pages, headDim].
func (k *Kernels) PageMinMax(K Ptr, kvHeads, tokens, headDim, pageSize int, mn, mx Ptr) error {
	pages := (tokens + pageSize - 1) / pageSize
	return k.launch("page_minmax", Dim3{pages, kvHeads, 1}, Dim3{headDim, 1, 1}, 0,
		K, int32(tokens), int32(headDim), int32(pageSize), int32(pages), mn, mx)
}

// Spin enqueues a kernel that keeps the GPU busy for d nanoseconds.
func (k *Kernels) Spin(ns int64) error {
	return k.launch("spin", Dim3{1, 1, 1}, Dim3{1, 1, 1}, 0, uint64(ns))
}

const (
	attnThreads    = 128 // ATTN_NT in attention.cu
	combThreads    = 256 // COMB_NT
	mergeGroup     = 16  // MERGE_S
	maxAttnSmemB   = 48 << 10
	minChunkTokens = ChunkTokens
)

// ChunkTokens is the unit of the split-KV kernels' chunks: a chunk asked
// for (Backend.SetAttnChunk) or chosen is a multiple of it.
const ChunkTokens = 32
