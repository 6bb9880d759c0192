package results

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// benchResult is one result line of the Go benchmark data format.
type benchResult struct {
	Name   string
	Iters  int64
	Values map[string]float64 // by unit
	Config map[string]string  // configuration in effect
}

// parseGoBench parses the Go benchmark data format (golang.org/design/14313):
// configuration lines "key: value" (key without spaces or upper case
// letters), result lines "<name> <iterations> <value> <unit>..." (fields
// split by runs of Unicode spaces, an even number of at least four, the name
// beginning with "Benchmark"); other lines are ignored but reported here so
// that the test can insist there are none.
func parseGoBench(data []byte) (res []benchResult, ignored []string, err error) {
	config := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if key, val, ok := parseConfigLine(line); ok {
			config[key] = val
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 4 && len(f)%2 == 0 && strings.HasPrefix(f[0], "Benchmark") {
			iters, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d: iterations %q: %v", n, f[1], err)
			}
			r := benchResult{Name: f[0], Iters: iters, Values: map[string]float64{}, Config: map[string]string{}}
			for k, v := range config {
				r.Config[k] = v
			}
			for i := 2; i < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					return nil, nil, fmt.Errorf("line %d: value %q: %v", n, f[i], err)
				}
				r.Values[f[i+1]] = v
			}
			res = append(res, r)
			continue
		}
		ignored = append(ignored, line)
	}
	return res, ignored, sc.Err()
}

func parseConfigLine(line string) (key, val string, ok bool) {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return "", "", false
	}
	key = line[:i]
	for _, r := range key {
		if unicode.IsSpace(r) || unicode.IsUpper(r) {
			return "", "", false
		}
	}
	rest := line[i+1:]
	if rest != "" && !unicode.IsSpace(rune(rest[0])) {
		return "", "", false
	}
	return key, strings.TrimSpace(rest), true
}

func TestWriteGoBenchParses(t *testing.T) {
	recs := []Record{
		{Cell: "a", Model: "ref25m", Policy: "quest", PolicyParams: map[string]any{"budget": 64.0},
			Task: "passkey", TaskParams: map[string]any{"length": 2048.0}, Status: "ok",
			Latency: Latency{P50: 123.456, N: 3, Samples: []float64{123.456, 120, 130.5}},
			Meta:    Meta{Backend: "cpu", Device: "AMD EPYC 7B13"}},
		{Cell: "b", Model: "my model/v2", Policy: "full", Task: "needle",
			TaskParams: map[string]any{"depth": 0.5, "offset": -1.0}, Status: "ok",
			Latency: Latency{P50: 80, N: 100}, Meta: Meta{Backend: "cpu", Device: "AMD EPYC 7B13"}},
		{Cell: "c", Model: "ref25m", Policy: "full", Task: "passkey", Status: "failed", Error: "boom",
			Latency: Latency{P50: 1, Samples: []float64{1, 2}}},
		{Cell: "d", Model: "ref25m", Policy: "full", Task: "passkey", Status: "ok"}, // no latency
	}
	var b bytes.Buffer
	require.NoError(t, WriteGoBench(&b, recs))
	t.Log("\n" + b.String())
	res, ignored, err := parseGoBench(b.Bytes())
	require.NoError(t, err)
	assert.Empty(t, ignored, "every line is a configuration or result line")
	require.Len(t, res, 2)

	byName := map[string][]float64{}
	for _, r := range res {
		assert.EqualValues(t, 1, r.Iters)
		assert.Len(t, r.Values, 1)
		byName[r.Name] = append(byName[r.Name], r.Values["ns/op"])
		assert.Equal(t, "kvbench", r.Config["pkg"])
		assert.NotEmpty(t, r.Config["goos"])
		assert.NotEmpty(t, r.Config["goarch"])
		assert.Equal(t, "cpu", r.Config["backend"])
		assert.Equal(t, "AMD EPYC 7B13", r.Config["device"])
	}
	quest := "BenchmarkAttn/model=ref25m/policy=quest_budget=64/task=passkey_length=2048"
	assert.Equal(t, []float64{123456}, byName[quest], "one line per record: its p50 in ns, not its per-step samples")
	// Sanitized: no space or slash inside values; a final "-1" is not left
	// to be read as GOMAXPROCS.
	needle := "BenchmarkAttn/model=my_model_v2/policy=full/task=needle_depth=0.5_offset=-1_"
	assert.Equal(t, []float64{80000}, byName[needle])
	for name := range byName {
		assert.Equal(t, 4, strings.Count(name, "/")+1, name)
		for _, part := range strings.Split(name, "/")[1:] {
			assert.Contains(t, part, "=", "sub-benchmark parts are key=value")
		}
	}
}

func TestWriteGoBenchCollidingNames(t *testing.T) {
	recs := []Record{
		{Cell: "x1", Model: "m a", Policy: "p", Task: "t", Status: "ok", Latency: Latency{P50: 1, Samples: []float64{1}}},
		{Cell: "x2", Model: "m_a", Policy: "p", Task: "t", Status: "ok", Latency: Latency{P50: 2, Samples: []float64{2}}},
	}
	var b bytes.Buffer
	require.NoError(t, WriteGoBench(&b, recs))
	res, _, err := parseGoBench(b.Bytes())
	require.NoError(t, err)
	require.Len(t, res, 2)
	assert.NotEqual(t, res[0].Name, res[1].Name)
}

// TestWriteGoBenchRuns: the records of several runs give one line per run
// and cell, under one name per cell (a colliding name keeps its suffix in
// every run), so benchstat sees the runs as repetitions.
func TestWriteGoBenchRuns(t *testing.T) {
	var recs []Record
	for run, scale := range []float64{1, 1.1, 0.9} {
		recs = append(recs,
			Record{Cell: "x1", Model: "m a", Policy: "p", Task: "t", Status: "ok", Latency: Latency{P50: 10 * scale}},
			Record{Cell: "x2", Model: "m_a", Policy: "p", Task: "t", Status: "ok", Latency: Latency{P50: 20 * scale}},
		)
		if run == 1 {
			recs = append(recs, Record{Cell: "x3", Model: "m", Policy: "p", Task: "t", Status: "failed", Latency: Latency{P50: 5}})
		}
	}
	var b bytes.Buffer
	require.NoError(t, WriteGoBench(&b, recs))
	res, _, err := parseGoBench(b.Bytes())
	require.NoError(t, err)
	byName := map[string][]float64{}
	for _, r := range res {
		byName[r.Name] = append(byName[r.Name], r.Values["ns/op"])
	}
	require.Len(t, byName, 2, "two cells: %v", byName)
	assert.ElementsMatch(t, []float64{10000, 11000, 9000}, byName["BenchmarkAttn/model=m_a/policy=p/task=t"])
	assert.ElementsMatch(t, []float64{20000, 22000, 18000}, byName["BenchmarkAttn/model=m_a/policy=p/task=t_dup1"])
}
