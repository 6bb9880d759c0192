package bench

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

func TestCellsOrder(t *testing.T) {
	suite := `name: order
models:
  - {name: a, path: synthetic:tiny}
  - {name: b, path: synthetic:tiny}
policies:
  - {name: streamingllm, recent: [8, 16], sinks: [0, 4]}
  - full
tasks:
  - {name: passkey, lengths: [64, 128], trials: 2}
`
	s, err := ParseSuite("order.yaml", []byte(suite))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range s.Cells() {
		got = append(got, c.Key)
	}
	// Models, then policies (parameters in file order, the last fastest),
	// then tasks; parameters sorted by name inside keys.
	var want []string
	for _, m := range []string{"a", "b"} {
		for _, pol := range []string{"streamingllm(recent=8,sinks=0)", "streamingllm(recent=8,sinks=4)",
			"streamingllm(recent=16,sinks=0)", "streamingllm(recent=16,sinks=4)", "full"} {
			for _, l := range []int{64, 128} {
				want = append(want, fmt.Sprintf("%s/%s/passkey(lengths=%d,trials=2)", m, pol, l))
			}
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("keys\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	cells := s.Cells()
	c := cells[2]
	if c.Model.Name != "a" || c.Policy != "streamingllm" || c.PolicyParams["recent"] != 8 || c.PolicyParams["sinks"] != 4 ||
		c.Task != "passkey" || c.TaskParams["lengths"] != 64 || c.TaskParams["trials"] != 2 {
		t.Errorf("cell %+v", c)
	}
	// Cells own their parameter maps.
	cells[0].PolicyParams["recent"] = 999
	cells[0].TaskParams["lengths"] = 999
	if c := s.Cells()[0]; c.PolicyParams["recent"] != 8 || c.TaskParams["lengths"] != 64 || cells[1].TaskParams["lengths"] != 128 {
		t.Errorf("cells share maps: %+v", c)
	}
	// Each cell's policy builds.
	for _, c := range cells {
		if _, err := policies.New(c.Policy, c.PolicyParams); err != nil {
			t.Errorf("%s: %v", c.Key, err)
		}
	}
}

func TestCanon(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{64, "64"},
		{int64(-3), "-3"},
		{64.0, "64"},
		{0.5, "0.5"},
		{1.0 / 3, "0.3333333333333333"},
		{1e20, "1e+20"},
		{math.Copysign(0, -1), "0"},
		{true, "true"},
		{"window", "window"},
		{"a b", `"a b"`},
		{"64", `"64"`},
		{"true", `"true"`},
		{"../data/x.txt", `"../data/x.txt"`},
		{"", `""`},
		{nil, "null"},
		{[]any{1, 0.25, "x"}, "[1,0.25,x]"},
		{map[string]any{"b": 1, "a": "z"}, "(a=z,b=1)"},
	} {
		if got := canon(c.v); got != c.want {
			t.Errorf("canon(%#v) = %s, want %s", c.v, got, c.want)
		}
	}
	if got := keyOf("quest", map[string]any{"page": 16, "budget": 64}); got != "quest(budget=64,page=16)" {
		t.Errorf("keyOf = %s", got)
	}
	if got := keyOf("full", nil); got != "full" {
		t.Errorf("keyOf = %s", got)
	}
}

func TestMatrixLimits(t *testing.T) {
	var list []string
	for i := 1; i <= 101; i++ {
		list = append(list, fmt.Sprint(i))
	}
	l := "[" + strings.Join(list, ", ") + "]"
	big := edit(5, "  - {name: h2o, heavy: "+l+", recent: "+l+"}")
	_, err := ParseSuite("big.yaml", []byte(big))
	if err == nil || !strings.Contains(err.Error(), "big.yaml:5:5: policy h2o: more than 10000 configurations") {
		t.Errorf("got %v", err)
	}
}

func TestEstimate(t *testing.T) {
	cells := []Cell{
		{Key: "a", Task: "passkey", TaskParams: tasks.Params{"lengths": 2048, "trials": 10}},
		{Key: "b", Task: "passkey", TaskParams: tasks.Params{"lengths": 1000}}, // trials: the documented default
		{Key: "c", Task: "perplexity", TaskParams: tasks.Params{"tokens": 1000, "streams": 4}},
		{Key: "d", Task: "needle", TaskParams: tasks.Params{"lengths": 4096, "depths": 0.5}},
		{Key: "e", Task: "needle", TaskParams: tasks.Params{"lengths": 4096, "max_new": 8}},
		{Key: "f", Task: "no-such-task"},
	}
	est := Estimate(cells)
	want := []int64{10 * (2048 + 16), 10 * (1000 + 16), 4000, 4096 + 32, 4096 + 8, 0}
	for i, c := range est.Cells {
		if c.Key != cells[i].Key || c.Tokens != want[i] {
			t.Errorf("cell %s: %d tokens, want %d", c.Key, c.Tokens, want[i])
		}
	}
	var total int64
	for _, w := range want {
		total += w
	}
	if est.Tokens != total || est.Unknown != 1 {
		t.Errorf("total %d (unknown %d), want %d (1)", est.Tokens, est.Unknown, total)
	}
	if s := est.String(); !strings.Contains(s, "6 cells") || !strings.Contains(s, "1 cells not estimated") {
		t.Errorf("String: %s", s)
	}

	s, err := LoadSuite("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	est = Estimate(s.Cells())
	// Per policy configuration: passkey 3 depths × 10 trials × (2048+16 +
	// 8192+16), perplexity 4M, needle 10 depths × (4096+32 + 16384+32).
	per := int64(3*10*(2064+8208) + 4000000 + 10*(4128+16416))
	if est.Tokens != 6*per || est.Unknown != 0 {
		t.Errorf("example: %d tokens (%d unknown), want %d", est.Tokens, est.Unknown, 6*per)
	}
}
