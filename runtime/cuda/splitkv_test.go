package cuda

import (
	"strings"
	"testing"
)

// TestAttnFamily checks the choice of split-KV kernel family (no GPU
// needed): the default, mma where it applies, and a clear error for an
// unknown value.
func TestAttnFamily(t *testing.T) {
	hopper := &Kernels{D: &Device{Major: 9}}
	turing := &Kernels{D: &Device{Major: 7}}
	for _, c := range []struct {
		env  string
		k    *Kernels
		g    int
		want string
	}{
		{"", hopper, 4, "split"}, {"split", hopper, 4, "split"}, {"mma", hopper, 4, "mma"},
		{"mma", hopper, 1, "split"}, {"mma", turing, 4, "split"},
	} {
		t.Setenv(attnKernelEnv, c.env)
		got, err := c.k.attnFamily(c.g)
		if err != nil || got != c.want {
			t.Errorf("%s=%q, major %d, g %d: %q, %v; want %q", attnKernelEnv, c.env, c.k.D.Major, c.g, got, err, c.want)
		}
	}
	t.Setenv(attnKernelEnv, "fast")
	if _, err := hopper.attnFamily(4); err == nil || !strings.Contains(err.Error(), attnKernelEnv) {
		t.Fatalf("unknown family: err %v", err)
	}
}
