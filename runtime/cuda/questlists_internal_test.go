package cuda

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestQuestLists (fake device) checks the host's side of Quest's calls over
// page lists (questlists.go): where Quest's page is the cache's and every
// token is visible, the call runs as one of a KV head a query head (the
// plan says Lists), each chosen head's descriptor naming its lists in the
// choice's region of the pool (2k words a head, the value list k words
// after the key list) and its count of tokens, no selection in the head
// table; be_quest_choose_batch's call names that region and, in its ints,
// the KV heads' list offsets in the device tables. With
// KVBENCH_QUEST_LISTS=off, bounds pages of another size or a sliding window
// that hides tokens, the call gathers its selection as before. The pool's
// words stay accounted for (handed out = live + free) while the choice
// holds its region and after the bounds are freed.
func TestQuestLists(t *testing.T) {
	for _, c := range []struct {
		name         string
		env          string
		page, window int
		want         bool
	}{
		{"lists", "on", 16, 0, true},
		{"off", "off", 16, 0, false},
		{"bounds of 8 tokens", "on", 8, 0, false},
		{"window", "on", 16, 100, false},
		{"window covering", "on", 16, 5000, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("KVBENCH_QUEST_LISTS", c.env)
			b := fakeOf(t, "bf16")
			cfg := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 1, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 100,
				MaxSeq: 8192, RopeTheta: 1e4, NormEps: 1e-5}
			const n, k = 600, 7
			seqs := filledSeqs(t, b, cfg, n)
			pb := b.NewPageBounds(cfg.KVHeads, cfg.HeadDim, c.page).(*pageBounds)
			pb.Extend(seqs)
			a := &runtime.AttnArgs{Rows: 1, QPos: []int{n}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim, Scale: 0.1,
				Seqs: seqs, Rope: runtime.RopeHalf, Theta: cfg.RopeTheta, Window: c.window,
				Q: b.Alloc(cfg.Heads * cfg.HeadDim), Out: b.Alloc(cfg.Heads * cfg.HeadDim)}
			pb.Choose(a, k)
			if a.Chosen == nil {
				t.Fatal("no choice")
			}
			b.Attend(a)
			ch := &pb.ch
			if got := b.AttnPlan().Lists; got != c.want {
				t.Fatalf("over page lists %v (plan %+v), want %v", got, b.AttnPlan(), c.want)
			}
			heads := cfg.KVHeads
			if c.want {
				heads = cfg.Heads
			}
			headOff := int(b.hInts[heads*sdWords+rhHeadOff]) // the header after the descriptors
			for h := range heads {
				d := b.hInts[h*sdWords : (h+1)*sdWords]
				if !c.want {
					if cnt := b.hInts[headOff+2*h*(cfg.Heads/cfg.KVHeads)+1]; cnt != int32(ch.counts[h*(cfg.Heads/cfg.KVHeads)]) {
						t.Fatalf("kv head %d: the head table's count %d, the choice's %d", h, cnt, ch.counts[h])
					}
					continue
				}
				cnt := ch.counts[h]
				kOff := int32(ch.lists.off) + int32(2*h*k)
				want := []int32{int32(cnt), 16, kOff, kOff + k, -1, -1}
				if fmt.Sprint(d[:6]) != fmt.Sprint(want) || d[10] != 0 || d[11] != int32(cnt) {
					t.Fatalf("head %d: descriptor %v, want %v..., tokens [0, %d)", h, d, want, cnt)
				}
				if sel := b.hInts[headOff+2*h+1]; sel != -1 {
					t.Fatalf("head %d: a selection of %d tokens in the head table", h, sel)
				}
			}
			// The choice's launch: its lists' region and the KV heads' list
			// offsets (the queue's scratch keeps the last launch's words).
			q := &b.qq
			w := q.tab[questTabWords-1]
			lists, kv := int32(uint32(w)), int(int32(uint32(w>>32)))
			if !c.want && c.page != 16 && lists != -1 {
				t.Fatalf("bounds of %d tokens: lists at %d", c.page, lists)
			}
			if c.want {
				if lists != int32(ch.lists.off) {
					t.Fatalf("the choice's lists at %d, its region at %d", lists, ch.lists.off)
				}
				ints := q.cInts[:cap(q.cInts)]
				for g := range seqs {
					t0 := b.table(&seqs[g])
					if ints[kv+2*g] != int32(t0.off) || ints[kv+2*g+1] != int32(t0.off+t0.size) {
						t.Fatalf("kv head %d: list offsets %v, its table's %d, %d", g, ints[kv+2*g:kv+2*g+2], t0.off, t0.off+t0.size)
					}
				}
				if ch.lists.words < int64(2*cfg.Heads*k) {
					t.Fatalf("a region of %d words for %d heads of %d pages", ch.lists.words, cfg.Heads, k)
				}
			}
			if _, top, live, free := b.tableWords(); top != live+free {
				t.Fatalf("the pool handed out %d words, %d live and %d free", top, live, free)
			}
			pb.Free()
			if _, top, live, free := b.tableWords(); top != live+free || b.pt.held != 0 {
				t.Fatalf("bounds freed: the pool handed out %d words, %d live and %d free, %d held", top, live, free, b.pt.held)
			}
		})
	}
}

// TestFlushQuest (fake device): Choose queues Quest's score and choice
// (no launch, once its buffers are made); FlushQuest launches both, and
// nothing when none is queued.
func TestFlushQuest(t *testing.T) {
	b := fakeOf(t, "bf16")
	cfg := runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 100,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	const n = 300
	seqs := filledSeqs(t, b, cfg, n)
	pb := b.NewPageBounds(cfg.KVHeads, cfg.HeadDim, 16).(*pageBounds)
	defer pb.Free()
	pb.Extend(seqs)
	a := &runtime.AttnArgs{Rows: 1, QPos: []int{n}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim, Scale: 0.1,
		Seqs: seqs, Q: b.Alloc(cfg.Heads * cfg.HeadDim), Out: b.Alloc(cfg.Heads * cfg.HeadDim)}
	pb.Choose(a, 4) // its buffers made (and cleared) first
	b.FlushQuest()
	l0, c0, _, _ := FakeCounts()
	pb.Choose(a, 4)
	l1, c1, _, _ := FakeCounts()
	b.FlushQuest()
	l2, c2, _, _ := FakeCounts()
	b.FlushQuest()
	l3, c3, _, _ := FakeCounts()
	if l1 != l0 || l2-l1 < 3 || l3 != l2 {
		t.Fatalf("launches: Choose %d, FlushQuest %d, again %d; want 0, the metadata's carrier, the score and the choice, 0", l1-l0, l2-l1, l3-l2)
	}
	// Its metadata carried by a launch (putCarried), not copied; with the
	// carriers off (KVBENCH_RTB_PUT=0), one copy.
	if c1 != c0 || c2 != c1 || c3 != c2 {
		t.Fatalf("copies: Choose %d, FlushQuest %d, again %d; want none", c1-c0, c2-c1, c3-c2)
	}
	was := b.putLaunches
	b.putLaunches = 0
	defer func() { b.putLaunches = was }()
	pb.Choose(a, 4)
	_, c4, _, _ := FakeCounts()
	b.FlushQuest()
	if _, c5, _, _ := FakeCounts(); c5-c4 != 1 {
		t.Fatalf("carriers off: FlushQuest made %d copies, want 1", c5-c4)
	}
}

// filledSeqs makes a KV cache of bf16 pages of 16 tokens for cfg on b,
// appends n tokens at positions 0..n-1 to layer 0 and returns its
// sequences.
func filledSeqs(t *testing.T, b *Backend, cfg runtime.Config, n int) []runtime.KVSeq {
	t.Helper()
	return filledSeqsOf(t, b, cfg, n, runtime.BF16)
}

// filledSeqsOf is filledSeqs over pages of type kt.
func filledSeqsOf(t *testing.T, b *Backend, cfg runtime.Config, n int, kt runtime.DType) []runtime.KVSeq {
	t.Helper()
	kc, err := runtime.NewKVCacheOf(b, cfg, 16, kt)
	if err != nil {
		t.Fatal(err)
	}
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	kc.Append(0, b.Alloc(n*cfg.KVDim()), b.Alloc(n*cfg.KVDim()), n, pos)
	return kc.Seqs(0)
}

// TestQuestListsBatch (fake device): a batch step of two streams' Quest
// calls runs over their page lists too (one launch, the plan says Lists),
// and gathers with KVBENCH_QUEST_LISTS=off.
func TestQuestListsBatch(t *testing.T) {
	for _, env := range []string{"on", "off"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("KVBENCH_QUEST_LISTS", env)
			b := fakeOf(t, "bf16")
			cfg := runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 100,
				MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
			var calls []*runtime.AttnArgs
			for i, n := range []int{300, 420} {
				seqs := filledSeqs(t, b, cfg, n)
				pb := b.NewPageBounds(cfg.KVHeads, cfg.HeadDim, 16)
				defer pb.Free()
				pb.Extend(seqs)
				a := &runtime.AttnArgs{Rows: 1, QPos: []int{n}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim, Scale: 0.1,
					Seqs: seqs, Q: b.Alloc(cfg.Heads * cfg.HeadDim), Out: b.Alloc(cfg.Heads * cfg.HeadDim)}
				pb.(runtime.PageChooser).Choose(a, 5+i)
				if a.Chosen == nil {
					t.Fatalf("stream %d: no choice", i)
				}
				calls = append(calls, a)
			}
			b.AttendBatch(calls)
			if p, want := b.AttnPlan(), env == "on"; p.Lists != want || !strings.HasPrefix(p.Kernel, "attn_rtb_") {
				t.Fatalf("plan %+v, want a batched launch over page lists %v", p, want)
			}
			for i, a := range calls {
				if a.KVHeads != cfg.KVHeads || len(a.Seqs) != cfg.KVHeads {
					t.Fatalf("stream %d: the caller's call changed (%d kv heads, %d sequences)", i, a.KVHeads, len(a.Seqs))
				}
			}
		})
	}
}

// TestFlushQuestFusedExtend checks where Quest's Extends run: one token a
// KV head folds in the choice's launch (no be_quest_extend), more tokens in
// a be_quest_extend before the scores, as with KVBENCH_QUEST_FUSE=off; bounds
// extended twice before a flush launch the first Extend alone, first.
func TestFlushQuestFusedExtend(t *testing.T) {
	b := fakeOf(t, "bf16")
	cfg := runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 100,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	kc, err := runtime.NewKVCacheOf(b, cfg, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	add := func(m int) []runtime.KVSeq {
		pos := make([]int, m)
		for i := range pos {
			pos[i] = n + i
		}
		kc.Append(0, b.Alloc(m*cfg.KVDim()), b.Alloc(m*cfg.KVDim()), m, pos)
		n += m
		return kc.Seqs(0)
	}
	pb := b.NewPageBounds(cfg.KVHeads, cfg.HeadDim, 16).(*pageBounds)
	defer pb.Free()
	q := b.Alloc(cfg.Heads * cfg.HeadDim)
	step := func(m ...int) (extends, chooses int64) {
		k0 := FakeKernels()
		var seqs []runtime.KVSeq
		for _, x := range m {
			seqs = add(x)
			pb.Extend(seqs)
		}
		a := &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim, Scale: 0.1,
			Seqs: seqs, Q: q, Out: b.Alloc(cfg.Heads * cfg.HeadDim)}
		pb.Choose(a, 4)
		b.FlushQuest()
		k1 := FakeKernels()
		return k1["be_quest_extend"] - k0["be_quest_extend"], k1["be_quest_choose_batch"] - k0["be_quest_choose_batch"]
	}
	if x, c := step(300); x != 1 || c != 1 {
		t.Fatalf("a prompt of 300 tokens: %d be_quest_extend, %d be_quest_choose_batch; want 1 and 1", x, c)
	}
	if x, c := step(1); x != 0 || c != 1 {
		t.Fatalf("one token: %d be_quest_extend, %d be_quest_choose_batch; want 0 (in the choice's launch) and 1", x, c)
	}
	if x, c := step(1, 1); x != 1 || c != 1 {
		t.Fatalf("bounds extended twice: %d be_quest_extend, %d be_quest_choose_batch; want 1 (the first Extend, flushed by the second) and 1", x, c)
	}
	// The first Extend is launched when the second is queued, alone.
	k0 := FakeKernels()
	pb.Extend(add(1))
	pb.Extend(add(1))
	if x := FakeKernels()["be_quest_extend"] - k0["be_quest_extend"]; x != 1 {
		t.Fatalf("bounds extended twice, no choice: the second Extend launched %d be_quest_extend before it, want 1", x)
	}
	b.FlushQuest()
	b.noQuestFuse = true
	defer func() { b.noQuestFuse = false }()
	if x, c := step(1); x != 1 || c != 1 {
		t.Fatalf("KVBENCH_QUEST_FUSE=off, one token: %d be_quest_extend, %d be_quest_choose_batch; want 1 and 1", x, c)
	}
}
