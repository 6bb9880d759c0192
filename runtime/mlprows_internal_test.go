package runtime

import "testing"

// stubBuf is a Buffer of no memory, told apart by its address.
type stubBuf struct{ n int }

func (b *stubBuf) Len() int { return b.n }

// mlpStub is a Backend whose FusedMLP serves passes of from rows or more
// (0: none) for every weight but those in none.
type mlpStub struct {
	Backend
	from int
	none Buffer
}

func (m mlpStub) MLP(x, xb, gate, up, down Buffer, rows, dim, hidden int) bool { return false }

func (m mlpStub) MLPFrom(gate, up, down Buffer, dim, hidden int) int {
	if gate == m.none {
		return 0
	}
	return m.from
}

// TestMLPRows checks the rows the MLP's float32 scratch holds: a pass's
// rows where the backend has no fused MLP or serves none of the layers'
// weights, else the rows below the fewest it serves (at least one), never
// more than the pass's.
func TestMLPRows(t *testing.T) {
	c := Config{Dim: 8, Hidden: 16}
	mk := func(n int) *deviceWeights {
		w := &deviceWeights{layers: make([]deviceLayer, n)}
		for i := range w.layers {
			w.layers[i].gate = &stubBuf{i}
		}
		return w
	}
	w := mk(3)
	for _, tc := range []struct {
		be      Backend
		w       *deviceWeights
		n, want int
	}{
		{nil, w, 8192, 8192},                                   // no FusedMLP
		{mlpStub{from: 16}, w, 8192, 15},                       // prompts fused, decode and small batches not
		{mlpStub{from: 16}, w, 10, 10},                         // no pass reaches the fused rows
		{mlpStub{from: 1}, w, 64, 1},                           // every pass fused: one row kept
		{mlpStub{from: 0}, w, 64, 64},                          // none served
		{mlpStub{from: 16, none: w.layers[1].gate}, w, 64, 64}, // one layer's weights not served
		{mlpStub{from: 16}, &deviceWeights{}, 64, 64},          // no layers
	} {
		if got := mlpRows(tc.be, tc.w, c, tc.n); got != tc.want {
			t.Errorf("mlpRows(%+v, %d) = %d, want %d", tc.be, tc.n, got, tc.want)
		}
	}
}
