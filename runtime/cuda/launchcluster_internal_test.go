package cuda

import (
	"strings"
	"testing"
)

// TestLaunchCluster: LaunchCluster refuses clusters of 0 or more than 8
// blocks and grids whose x is not a multiple of the cluster, naming the
// kernel, and launches the rest (on the fake device, which reports
// compute capability 9.0 and cuLaunchKernelEx).
func TestLaunchCluster(t *testing.T) {
	b, err := NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.D.HasClusters() {
		t.Fatal("the fake device reports no thread block clusters")
	}
	const name = "attn_rt_d128_g4_bf16_tcc"
	f := b.fn(name)
	for _, c := range []struct {
		cluster, gridX int
		ok             bool
	}{{0, 8, false}, {9, 9, false}, {2, 7, false}, {8, 16, true}, {1, 5, true}, {3, 6, true}} {
		err := f.LaunchCluster(c.cluster, Dim3{c.gridX, 1, 1}, Dim3{128, 1, 1}, 0)
		switch {
		case c.ok && err != nil:
			t.Errorf("cluster %d, grid %d: %v", c.cluster, c.gridX, err)
		case !c.ok && err == nil:
			t.Errorf("cluster %d, grid %d: launched, want an error", c.cluster, c.gridX)
		case !c.ok && !strings.Contains(err.Error(), name):
			t.Errorf("cluster %d, grid %d: error %q does not name the kernel", c.cluster, c.gridX, err)
		}
	}
}
