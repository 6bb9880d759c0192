package bench

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	_ "github.com/kvbench/kvbench/runtime/cpu"
)

// TestSuitePrecision checks the precision key: bf16 and f32 are kept, the
// default is the backend's (""), anything else is an error naming the line;
// the CPU computes in float32 only and says so.
func TestSuitePrecision(t *testing.T) {
	base := "name: p\nmodels: [synthetic:tiny]\npolicies: [full]\ntasks: [{name: passkey, lengths: [256], trials: 1}]\n"
	for _, want := range []string{"bf16", "f32", ""} {
		y := base
		if want != "" {
			y += "precision: " + want + "\n"
		}
		s, err := ParseSuite("s.yaml", []byte(y))
		if err != nil {
			t.Fatalf("precision %q: %v", want, err)
		}
		if s.Precision != want {
			t.Errorf("precision %q parsed as %q", want, s.Precision)
		}
	}
	_, err := ParseSuite("s.yaml", []byte(base+"precision: fp8\n"))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:5") || !strings.Contains(err.Error(), "fp8") {
		t.Errorf("precision fp8: error %v, want one naming s.yaml:5 and the value", err)
	}
	spec, err := runtime.LookupBackend("cpu")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := spec.Open(1, "bf16"); err == nil || !strings.Contains(err.Error(), "f32") {
		t.Errorf("cpu at bf16: error %v, want one saying it computes in f32", err)
	}
	be, err := spec.Open(1, "f32")
	if err != nil {
		t.Fatalf("cpu at f32: %v", err)
	}
	if c, ok := be.(runtime.Closer); ok {
		c.Close()
	}
}
