package cuda

import "fmt"

const (
	evictThreads = 256  // EV_NT in policies.cu
	tovaTokens   = 32   // EV_TT
	wideThreads  = 1024 // TKW_NT
	floorThreads = 256  // RF_NT
)

// Evicting is the decode step of H2O or TOVA over the S.Tokens tokens they
// hold: dense attention that also writes its scores, then the step's
// attention probabilities folded into per-token scores and the token to
// evict chosen (H2O: per KV head, the lowest accumulated score outside the
// last Recent tokens; TOVA: for the layer, the lowest probability averaged
// over all query heads).
type Evicting struct {
	S      Shape
	TOVA   bool
	Recent int
	k      *Kernels
	a      *splitKV
	raw    Ptr // [Heads, Tokens] base-2 scores
	acc    Ptr // [KVHeads, Tokens] accumulated (H2O) or this step's (TOVA) scores
	evict  Ptr // [KVHeads] int32
	best   Ptr // [KVHeads] uint64: the lowest (score bits, token) so far; all ones between launches
	done   Ptr // [KVHeads] int32: blocks finished; 0 between launches
}

// NewEvicting prepares the H2O (tova false) or TOVA step for s.
func (k *Kernels) NewEvicting(s Shape, tova bool, recent, chunk int) (*Evicting, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if recent < 0 {
		return nil, fmt.Errorf("cuda: h2o recent window %d", recent)
	}
	e := &Evicting{S: s, TOVA: tova, Recent: recent, k: k}
	var err error
	if _, err = k.Func("evict_scores"); err != nil {
		return nil, err
	}
	alloc := func(p *Ptr, bytes int64) {
		if err == nil {
			*p, err = k.D.Alloc(bytes)
		}
	}
	alloc(&e.raw, int64(s.Heads)*int64(s.Tokens)*4)
	alloc(&e.acc, int64(s.KVHeads)*int64(s.Tokens)*4)
	alloc(&e.evict, int64(s.KVHeads)*4)
	alloc(&e.best, int64(s.KVHeads)*8)
	alloc(&e.done, int64(s.KVHeads)*4)
	if err == nil {
		err = k.D.Memset32(e.best, ^uint32(0), 2*int64(s.KVHeads))
	}
	if err == nil {
		err = k.D.Memset32(e.done, 0, int64(s.KVHeads))
	}
	if err == nil {
		err = e.Reset()
	}
	if err == nil {
		e.a, err = k.newSplitKV("dense", s, s.Group(), s.KVHeads, 1, s.Tokens, 0, chunk)
	}
	if err != nil {
		e.Free()
		return nil, err
	}
	return e, nil
}

// Reset zeroes the accumulated scores.
func (e *Evicting) Reset() error {
	return e.k.D.Memset32(e.acc, 0, int64(e.S.KVHeads)*int64(e.S.Tokens))
}

// Launch enqueues the step: attention into out, scores, the eviction.
func (e *Evicting) Launch(q, K, V, out Ptr) error {
	s := e.S
	if err := e.a.launch(s, q, K, V, 0, 0, 1, out, e.raw, false); err != nil {
		return err
	}
	tova, grid, smem := int32(0), Dim3{(s.Tokens + evictThreads - 1) / evictThreads, s.KVHeads, 1}, 2*s.Group()*4
	if e.TOVA {
		tova, grid, smem = 1, Dim3{(s.Tokens + tovaTokens - 1) / tovaTokens, 1, 1}, (2*s.Heads+tovaTokens*s.KVHeads)*4
	}
	return e.k.launchAfter("evict_scores", grid, Dim3{evictThreads, 1, 1}, smem, e.raw, e.a.partML, int32(e.a.nchunks), int32(s.Tokens), int32(s.Group()), int32(s.KVHeads), tova,
		int32(e.Recent), e.acc, e.best, e.done, e.evict)
}

// Scores downloads the per-token scores [KVHeads][Tokens]: H2O's
// accumulated probabilities (summed over the group's heads and every launch
// since Reset), or TOVA's probabilities of the last launch summed over each
// group's heads.
func (e *Evicting) Scores() ([][]float32, error) {
	n := e.S.Tokens
	flat := make([]float32, e.S.KVHeads*n)
	if err := Download(e.k.D, flat, e.acc); err != nil {
		return nil, err
	}
	out := make([][]float32, e.S.KVHeads)
	for r := range out {
		out[r] = flat[r*n : (r+1)*n]
	}
	return out, nil
}

// Evicted downloads the tokens chosen for eviction by the last launch: one
// per KV head for H2O (-1 where every token is recent), one for TOVA.
func (e *Evicting) Evicted() ([]int32, error) {
	n := e.S.KVHeads
	if e.TOVA {
		n = 1
	}
	out := make([]int32, n)
	return out, Download(e.k.D, out, e.evict)
}

// Bytes is the memory the step moves: K and V, the scores written and read
// back, the per-token scores written (and read first by H2O).
func (e *Evicting) Bytes() int64 {
	s := e.S
	b := s.KVBytes() + 2*int64(s.Heads)*int64(s.Tokens)*4 + int64(s.KVHeads)*int64(s.Tokens)*4
	if e.TOVA {
		return b
	}
	return b + int64(s.KVHeads)*int64(s.Tokens)*4
}

// Plan is the split of the attention into blocks.
func (e *Evicting) Plan() Plan { return e.a.plan() }

// Free releases the scratch memory.
func (e *Evicting) Free() {
	for _, p := range []Ptr{e.raw, e.acc, e.evict, e.best, e.done} {
		if p != 0 {
			_ = e.k.D.Free(p)
		}
	}
	if e.a != nil {
		e.a.free()
	}
}

// Oracle is the oracle policy's decode step: the exact score of every
// cached token for every query head, the Select best per query head, and
// attention over them.
type Oracle struct {
	S      Shape
	Select int // tokens attended per query head: min(budget, Tokens)
	k      *Kernels
	tpb    int // tokens per scoring block
	scores Ptr // [Heads, Tokens] base-2 scores
	sel    Ptr // [Heads, Select] int32
	a      *splitKV
}

// NewOracle prepares the oracle step for s attending to budget tokens per
// query head.
func (k *Kernels) NewOracle(s Shape, budget, chunk int) (*Oracle, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if budget <= 0 {
		return nil, fmt.Errorf("cuda: oracle budget %d", budget)
	}
	o := &Oracle{S: s, Select: min(budget, s.Tokens), k: k}
	f, err := k.Func(o.scoreFn())
	if err != nil {
		return nil, err
	}
	if _, err := k.Func("topk_wide"); err != nil {
		return nil, err
	}
	occ, err := f.Occupancy(questThreads, 0)
	if err != nil {
		return nil, err
	}
	perHead := max(1, k.D.SMs*max(occ, 1)/s.KVHeads)
	o.tpb = max(32, ((s.Tokens+perHead-1)/perHead+31)/32*32)
	if o.scores, err = k.D.Alloc(int64(s.Heads) * int64(s.Tokens) * 4); err == nil {
		if o.sel, err = k.D.Alloc(int64(s.Heads) * int64(o.Select) * 4); err == nil {
			o.a, err = k.newSplitKV("paged", s, 1, s.Heads, s.Group(), o.Select, 1, chunk)
		}
	}
	if err != nil {
		o.Free()
		return nil, err
	}
	return o, nil
}

func (o *Oracle) scoreFn() string { return fmt.Sprintf("qk_scores_d%d_g%d", o.S.HeadDim, o.S.Group()) }

// Launch enqueues the scoring, the selection and the attention into out.
func (o *Oracle) Launch(q, K, V, out Ptr) error {
	s := o.S
	if err := o.k.launch(o.scoreFn(), Dim3{(s.Tokens + o.tpb - 1) / o.tpb, s.KVHeads, 1}, Dim3{questThreads, 1, 1}, 0,
		q, K, int32(s.Tokens), int32(o.tpb), scaleLog2(s.HeadDim), o.scores); err != nil {
		return err
	}
	if err := o.k.launchAfter("topk_wide", Dim3{s.Heads, 1, 1}, Dim3{wideThreads, 1, 1}, 0,
		o.scores, int32(s.Tokens), int32(o.Select), o.sel); err != nil {
		return err
	}
	return o.a.launch(s, q, K, V, o.sel, o.Select, 1, out, 0, true)
}

// Scores downloads the base-2 scores of the last launch: [Heads][Tokens].
func (o *Oracle) Scores() ([][]float32, error) {
	return downloadRows[float32](o.k.D, o.scores, o.S.Heads, o.S.Tokens)
}

// Selection downloads the tokens each query head attended to in the last
// launch, ascending: [Heads][Select].
func (o *Oracle) Selection() ([][]int32, error) {
	return downloadRows[int32](o.k.D, o.sel, o.S.Heads, o.Select)
}

// Bytes is the memory the step moves: every key, the scores written and
// read, and each query head's selected keys and values.
func (o *Oracle) Bytes() int64 {
	s := o.S
	keys := int64(s.KVHeads) * int64(s.Tokens) * int64(s.HeadDim) * 2
	return keys + 2*int64(s.Heads)*int64(s.Tokens)*4 + 2*int64(s.Heads)*int64(o.Select)*int64(s.HeadDim)*2
}

// Plan is the split of the attention over the selected tokens into blocks.
func (o *Oracle) Plan() Plan { return o.a.plan() }

// Free releases the scratch memory.
func (o *Oracle) Free() {
	for _, p := range []Ptr{o.scores, o.sel} {
		if p != 0 {
			_ = o.k.D.Free(p)
		}
	}
	if o.a != nil {
		o.a.free()
	}
}

func downloadRows[T int32 | float32](d *Device, p Ptr, rows, cols int) ([][]T, error) {
	flat := make([]T, rows*cols)
	if err := Download(d, flat, p); err != nil {
		return nil, err
	}
	out := make([][]T, rows)
	for r := range out {
		out[r] = flat[r*cols : (r+1)*cols]
	}
	return out, nil
}

// ReadFloor enqueues a kernel that reads bytes (a multiple of 16) at src
// once and does nothing else, with one wave of resident blocks: what no
// step that must read as many bytes can beat. sink is 4 bytes of device
// memory it may write.
func (k *Kernels) ReadFloor(src Ptr, bytes int64, sink Ptr) error {
	if bytes%16 != 0 {
		return fmt.Errorf("cuda: read floor of %d bytes, not a multiple of 16", bytes)
	}
	f, err := k.Func("read_floor")
	if err != nil {
		return err
	}
	occ, err := f.Occupancy(floorThreads, 0)
	if err != nil {
		return err
	}
	return f.Launch(Dim3{k.D.SMs * max(occ, 1), 1, 1}, Dim3{floorThreads, 1, 1}, 0, src, uint64(bytes/16), sink)
}

// How SplitFloor's partials are merged.
const (
	FloorCombine = iota // a second kernel, after the first one's end (attn_rt_combine's way)
	FloorFused          // the row's last block to finish (the fused merge's way)
	FloorNone           // none: the partials are written and left (the split shape's reads and writes alone)
)

// SplitFloor is the read floor in a split step's shape (floor_split and
// floor_combine in policies.cu): Rows rows read in Chunks chunks each, one
// block a chunk, each writing NP floats of partial that a merge sums: what
// a split-KV decode step that reads as many bytes and merges as many
// partials could reach at best.
type SplitFloor struct {
	k                  *Kernels
	Rows, Chunks, NP   int
	part, out, counter Ptr
}

// NewSplitFloor allocates a SplitFloor's partials, outputs and counters.
func (k *Kernels) NewSplitFloor(rows, chunks, np int) (*SplitFloor, error) {
	if rows < 1 || rows > maxGridY || chunks < 1 || np < 1 {
		return nil, fmt.Errorf("cuda: split floor of %d rows (1 to %d), %d chunks and %d floats a partial", rows, maxGridY, chunks, np)
	}
	f := &SplitFloor{k: k, Rows: rows, Chunks: chunks, NP: np}
	var err error
	alloc := func(p *Ptr, bytes int64) {
		if err == nil {
			*p, err = k.D.Alloc(bytes)
		}
	}
	alloc(&f.part, int64(rows*chunks*np)*4)
	alloc(&f.out, int64(rows*np)*4)
	alloc(&f.counter, int64(rows)*4)
	if err == nil {
		err = k.D.Memset32(f.counter, 0, int64(rows))
	}
	if err != nil {
		f.Free()
		return nil, err
	}
	return f, nil
}

// Launch enqueues one step: rows of rowBytes (a multiple of 16) each from
// src, merged by mode (FloorCombine, FloorFused or FloorNone).
func (f *SplitFloor) Launch(src Ptr, rowBytes int64, mode int) error {
	if rowBytes%16 != 0 || rowBytes < 16 {
		return fmt.Errorf("cuda: split floor rows of %d bytes, not a positive multiple of 16", rowBytes)
	}
	if mode != FloorCombine && mode != FloorFused && mode != FloorNone {
		return fmt.Errorf("cuda: split floor merge %d", mode)
	}
	sf, err := f.k.Func("floor_split")
	if err != nil {
		return err
	}
	if err := sf.Launch(Dim3{f.Chunks, f.Rows, 1}, Dim3{floorThreads, 1, 1}, 0, src, uint64(rowBytes/16), int32(f.NP),
		f.part, f.out, f.counter, flag(mode == FloorFused)); err != nil {
		return err
	}
	if mode != FloorCombine {
		return nil
	}
	cf, err := f.k.Func("floor_combine")
	if err != nil {
		return err
	}
	return cf.LaunchAfter(Dim3{(f.NP + floorThreads - 1) / floorThreads, f.Rows, 1}, Dim3{floorThreads, 1, 1}, 0,
		f.part, int32(f.Chunks), int32(f.NP), f.out)
}

// Out reads the last step's merged rows [Rows, NP].
func (f *SplitFloor) Out() ([]float32, error) {
	out := make([]float32, f.Rows*f.NP)
	return out, Download(f.k.D, out, f.out)
}

// Parts reads the last step's partials [Rows, Chunks, NP].
func (f *SplitFloor) Parts() ([]float32, error) {
	part := make([]float32, f.Rows*f.Chunks*f.NP)
	return part, Download(f.k.D, part, f.part)
}

// Free releases the device memory.
func (f *SplitFloor) Free() {
	for _, p := range []Ptr{f.part, f.out, f.counter} {
		if p != 0 {
			_ = f.k.D.Free(p)
		}
	}
}
