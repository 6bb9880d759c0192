package policies

import "github.com/kvbench/kvbench/runtime"

// accArms is the attention sums a scoring policy (H2O, TOVA) asks for: each
// layer's Acc headers, armed with buffers of the policy's and replaced by the
// backend's views where it gives them (AccView). A layer's headers are its
// own so that a pass's sums may be filled after its last layer
// (runtime.LateHook); the buffers are shared by the layers (a backend that
// fills late gives views). Where the backend sums each KV head's group
// (runtime.AccGrouper) the headers are a KV head's (AccGroup); else a query
// head's, and groupSum adds a group the way the backend would.
type accArms struct {
	hdr     [][][]float32 // [layer][head or KV head]
	own     [][]float32   // [head or KV head]
	grouped bool
}

// start sizes the headers for r's model and asks r's backend whether it
// sums the groups.
func (s *accArms) start(r *runtime.Runner) {
	c := r.Model.Config
	if len(s.own) != c.Heads || len(s.hdr) != c.Layers {
		s.own, s.hdr = make([][]float32, c.Heads), make([][][]float32, c.Layers)
		for l := range s.hdr {
			s.hdr[l] = make([][]float32, c.Heads)
		}
	}
	s.grouped = runtime.GroupSums(r.Backend)
}

// arm sets a's Acc to layer l's headers, each as long as its KV head's
// sequence, the sums from zero (AccZero), from the query rows at positions
// accFrom and after.
func (s *accArms) arm(l int, a *runtime.AttnArgs, accFrom int) {
	group := a.Heads / a.KVHeads
	hdr := s.hdr[l]
	if s.grouped {
		hdr = hdr[:a.KVHeads]
	}
	for i := range hdr {
		n := a.Seqs[i/group].N
		if s.grouped {
			n = a.Seqs[i].N
		}
		if cap(s.own[i]) < n {
			s.own[i] = make([]float32, n, n+n/4+64)
		}
		hdr[i] = s.own[i][:n]
	}
	a.Acc, a.AccFrom, a.AccZero, a.AccView, a.AccGroup = hdr, accFrom, true, true, s.grouped
}

// groupSum is KV head g's sum at token index i of a's filled Acc: its
// slice's (AccGroup), or its query heads' added up in float32, in head
// order, as a grouping backend adds them.
func groupSum(a *runtime.AttnArgs, g, i int) float32 {
	if a.AccGroup {
		return a.Acc[g][i]
	}
	group := a.Heads / a.KVHeads
	s := a.Acc[g*group][i]
	for h := g*group + 1; h < (g+1)*group; h++ {
		s += a.Acc[h][i]
	}
	return s
}
