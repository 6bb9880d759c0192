package policies

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// base is the part every policy shares: binding to a runner, the prompt
// protocol (promptState: which forward chunks evict, see Prefill), the
// per-step accounting of memory, bytes read and tokens attended, and recall
// sampling. A policy calls begin first and finish last in BeforeAttend, and
// end last in AfterAttend.
type base struct {
	promptState
	name        string
	params      Params
	budget      int
	evicts      bool // removes tokens: recall needs the cache's reference copy
	r           *runtime.Runner
	cache       *runtime.KVCache
	cfg         runtime.Config
	stats       Stats
	recallEvery int
	sampled     bool      // this decode step samples recall
	recall      []float32 // [heads] recall output of attention
	mark        []int32   // [tokens] stamp per token, for union counting
	stamp       int32
	drop        []int32 // scratch list of indices to evict
	stepRead    int64   // KV bytes read so far in this decode step
	held        int     // tokens held so far in this decode step, summed over layers and KV heads
	err         error   // a condition that makes the stream's results invalid
	inStep      bool    // a decode step is between its first begin and its last end

	// covers are the token counts of device selections (runtime.Chosen)
	// that the accounting of a decode step still lacks (see settle).
	covers []pendingCover

	// A budget given as a share of the prompt (see ratioBudget).
	ratioOf   string            // the share, as errors name it ("ratio 0.25")
	ratioKeys []string          // parameters resolve sets
	resolve   func(n int) error // sets the budget from a prompt of n tokens; nil: in tokens
	pending   bool              // the ratio waits for this stream's first prompt
	halted    bool              // the prompt gave a budget the policy cannot use
}

// Err reports why the policy could not act (the runner returns it from
// Forward), or nil.
func (b *base) Err() error { return b.err }

func (b *base) Name() string   { return b.name }
func (b *base) Params() Params { return b.params }
func (b *base) Budget() int    { return b.budget }
func (b *base) Evicts() bool   { return b.evicts }

// LayerBudget is the default for evicting policies: budget held and
// attended; for the others, no bound.
func (b *base) LayerBudget(l int) (hold, attend int) {
	if b.evicts {
		return b.budget, b.budget
	}
	return 0, 0
}
func (b *base) Stats() *Stats {
	b.settle()
	return &b.stats
}
func (b *base) MeasureRecall(n int) { b.recallEvery = max(n, 0) }

// Prompt announces a prompt; the stream's first one resolves a budget given
// as a share of the prompt.
func (b *base) Prompt(n int) {
	b.announce(n)
	b.resolveRatio(n)
	if b.cache != nil && !b.evicts {
		// The cache will keep the whole prompt: its pages set aside in one
		// run per sequence (a GPU backend's attention then finds them by
		// arithmetic). Not for a policy that evicts, under either protocol:
		// a run keeps its pages with its sequence after an eviction, so a
		// dense prompt's run would hold every layer's whole prompt at once
		// (a backend's KV peak above the policy's: a prompt in one forward
		// compresses each layer before the next one fills, and the pages
		// it frees serve the next layer) and after it (TestDensePromptHold).
		b.cache.Hold(n)
	}
}
func (b *base) SetPrefill(p Prefill) { b.prefill = p }

// bind attaches the policy to a fresh stream of r.
func (b *base) bind(r *runtime.Runner, self runtime.Hook) error {
	if r.Pos() != 0 {
		return fmt.Errorf("policy %s: Start needs a fresh stream (call Reset first), runner is at position %d", b.name, r.Pos())
	}
	b.r, b.cache, b.cfg = r, r.Cache, r.Model.Config
	b.covers = b.covers[:0] // the last stream's, whose accounting is dropped
	b.restart()
	b.err = nil
	b.waitRatio()
	c := b.cfg
	b.stats = Stats{Attended: make([][]int, c.Layers), RecallByLayer: make([]float64, c.Layers), RecallNByLayer: make([]int, c.Layers)}
	for l := range b.stats.Attended {
		b.stats.Attended[l] = make([]int, c.Heads)
	}
	b.recall = make([]float32, c.Heads)
	if b.recallEvery > 0 && b.evicts {
		r.Cache.RecordAll()
	}
	r.Hook = self
	return nil
}

// elemBytes is the size of one cached key or value vector.
func (b *base) vecBytes() int64 { return b.cache.PageBytes() / int64(2*b.cache.PageSize()) }

// begin places the forward within the prompt protocol (at layer 0) and
// starts the accounting of layer l's attention. Layer l's new tokens are in
// the cache and the policy has evicted nothing yet for them, so this is
// where the cache's memory peaks: the high-water mark is taken here, at
// every layer (a dense prompt peaks before its compression).
func (b *base) begin(l int, a *runtime.AttnArgs) {
	if l == 0 {
		b.settle()
		// A forward is a decode step when it feeds one token outside an
		// announced prompt (a prompt's last chunk may be one row long).
		b.place(a)
		b.inStep = b.decode
		if b.decode {
			b.stats.Steps++
			b.sampled = b.recallEvery > 0 && b.stats.Steps%b.recallEvery == 0
			b.stepRead = 0
		}
	}
	b.stats.MaxResidentBytes = max(b.stats.MaxResidentBytes, b.cache.ResidentBytes())
}

// finish counts what layer l's attention will read and arms recall sampling.
// metaBytes is what the policy read to choose (Quest's page bounds).
func (b *base) finish(l int, a *runtime.AttnArgs, metaBytes int64) {
	if !b.decode {
		return
	}
	group := a.Heads / a.KVHeads
	vb := b.vecBytes()
	for g := range a.Seqs {
		seq := &a.Seqs[g]
		union := 0
		all := a.Sel == nil && a.Chosen == nil
		for h := g * group; h < (g+1)*group && !all; h++ {
			if a.Chosen != nil {
				all = a.Chosen.Count(h) < 0
			} else {
				all = a.Sel[h] == nil
			}
		}
		switch {
		case all:
			union = seq.N
		case a.Chosen != nil:
			// On the device: counted once it is known (settle).
			b.covers = append(b.covers, pendingCover{a.Chosen, g, 2 * vb})
		default:
			if len(b.mark) < seq.N {
				b.mark = make([]int32, seq.N*2)
				b.stamp = 0
			}
			b.stamp++
			for h := g * group; h < (g+1)*group; h++ {
				for _, t := range a.Sel[h] {
					if b.mark[t] != b.stamp {
						b.mark[t] = b.stamp
						union++
					}
				}
			}
		}
		for h := g * group; h < (g+1)*group; h++ {
			n := seq.N
			if a.Sel != nil && a.Sel[h] != nil {
				n = len(a.Sel[h])
			} else if a.Chosen != nil && a.Chosen.Count(h) >= 0 {
				n = a.Chosen.Count(h)
			}
			b.stats.Attended[l][h] = n
			b.stats.MaxAttended = max(b.stats.MaxAttended, n)
		}
		b.stepRead += int64(union) * 2 * vb
	}
	b.stepRead += metaBytes
	if b.sampled {
		a.Recall = b.recall
		if b.evicts {
			a.Ref = b.cache.Reference(l)
		} else {
			a.Ref = a.Seqs
		}
	}
}

// end collects recall, the tokens layer l holds after a decode step and,
// after the last layer, the step's totals.
func (b *base) end(l int, a *runtime.AttnArgs) {
	if b.decode {
		seqs := b.cache.Seqs(l)
		if l == 0 {
			b.held = 0
		}
		for h := range seqs {
			b.held += seqs[h].N
			b.stats.MaxHeld = max(b.stats.MaxHeld, seqs[h].N)
		}
	}
	if b.decode && b.sampled && a.Recall != nil {
		for _, v := range a.Recall[:a.Heads] {
			b.stats.RecallSum += float64(v)
			b.stats.RecallN++
			b.stats.RecallByLayer[l] += float64(v)
			b.stats.RecallNByLayer[l]++
		}
	}
	if l == b.cfg.Layers-1 {
		b.inStep = false
		s := &b.stats
		s.ResidentBytes = b.cache.ResidentBytes()
		s.MaxResidentBytes = max(s.MaxResidentBytes, s.ResidentBytes)
		s.AllocatedBytes = b.cache.AllocatedBytes()
		s.Budget = b.budget
		if b.decode {
			s.BytesRead = b.stepRead
			s.TotalBytesRead += b.stepRead
			s.Held = float64(b.held) / float64(b.cfg.Layers*b.cfg.KVHeads)
		}
	}
}

// pendingCover is a KV head's token count in a device selection, of bytes
// bytes a token, that a decode step's accounting still lacks.
type pendingCover struct {
	c     runtime.Chosen
	g     int
	bytes int64
}

// settle counts the device selections' tokens (runtime.Chosen.Covered,
// which may wait for the device) into the bytes read: of the step in
// progress, or of the last one and the total once it has ended. A
// selection is valid until its layer's next one, so settle runs before a
// step's first layer, and whenever Stats are read.
func (b *base) settle() {
	for _, p := range b.covers {
		n := int64(p.c.Covered(p.g)) * p.bytes
		if b.inStep {
			b.stepRead += n
		} else {
			b.stats.BytesRead += n
			b.stats.TotalBytesRead += n
		}
	}
	b.covers = b.covers[:0]
}

// evictWhere drops from every KV head of layer l the tokens whose position
// drop accepts.
func (b *base) evictWhere(l int, drop func(pos int32) bool) {
	seqs := b.cache.Seqs(l)
	for h := range seqs {
		b.drop = b.drop[:0]
		for t, p := range seqs[h].Pos[:seqs[h].N] {
			if drop(p) {
				b.drop = append(b.drop, int32(t))
			}
		}
		if len(b.drop) > 0 {
			b.cache.Evict(l, h, b.drop)
		}
	}
}

// newest is the position of the last token of the forward in progress.
func newest(a *runtime.AttnArgs) int32 { return int32(a.QPos[a.Rows-1]) }
