package results

// The comparison's thresholds: each metric's default gate, the parsing of
// "metric=gate,..." and the check that every name given is a metric the runs
// or the harness know (with the closest name where one is not).

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

// DefaultThreshold is the gate of a metric that the thresholds do not name:
// DefaultFractionGate for a fraction (absolute drop), DefaultLatencyGate for
// latency_p50, DefaultRelativeGate for every other metric a task declares and
// for the cache figures. tokens_per_s (the whole cell's wall time, prefill
// included: too noisy on a shared CPU) and metrics of unknown direction have
// no default gate.
func DefaultThreshold(m MetricInfo) (float64, bool) {
	switch {
	case m.Direction == Unknown || m.Name == MetricTokensPerS:
		return 0, false
	case m.Name == MetricLatencyP50:
		return DefaultLatencyGate, true
	case m.Absolute():
		return DefaultFractionGate, true
	}
	return DefaultRelativeGate, true
}

// ParseThresholds parses "accuracy=0.02,ppl=5%,latency_p50=0.10,nll=off": a
// metric name and a non-negative number (a fraction, or a percentage with
// "%"), or "off" for no gate. For a fraction metric (accuracy, score) the
// value is an absolute drop, for any other a relative change. It checks the
// syntax only; Compare checks the names against the metrics it knows. An
// empty string gives an empty map (every metric keeps its default).
func ParseThresholds(s string) (map[string]float64, error) {
	m := map[string]float64{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		key, val, ok := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch {
		case item == "":
			return nil, fmt.Errorf("thresholds: item %d is empty (in %q)", i+1, s)
		case !ok:
			return nil, fmt.Errorf("thresholds: item %d %q: want metric=value", i+1, item)
		case key == "" || strings.ContainsAny(key, " \t"):
			return nil, fmt.Errorf("thresholds: item %d %q: bad metric name %q", i+1, item, key)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("thresholds: item %d %q: %s given twice", i+1, item, key)
		}
		if strings.EqualFold(val, "off") {
			m[key] = Off
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(val, "%"), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("thresholds: item %d %q: value %q is not a non-negative number or off", i+1, item, val)
		}
		if strings.HasSuffix(val, "%") {
			v /= 100
		}
		m[key] = v
	}
	return m, nil
}

// knownMetricNames lists the metric names that thresholds may name.
func knownMetricNames(runs ...[]Run) []string {
	set := map[string]bool{}
	for _, m := range harnessMetrics {
		set[m.Name] = true
	}
	for _, name := range tasks.Names() {
		t, _ := tasks.Lookup(name)
		for _, m := range t.Metrics() {
			set[m.Name] = true
		}
	}
	for _, side := range runs {
		for _, r := range side {
			for i := range r.Records {
				for _, d := range r.Records[i].Declared {
					set[d.Name] = true
				}
				for k := range r.Records[i].Metrics {
					set[k] = true
				}
			}
		}
	}
	return sortedKeys(set)
}

func checkThresholdNames(th map[string]float64, base, new []Run) error {
	if len(th) == 0 {
		return nil
	}
	known := knownMetricNames(base, new)
	isKnown := map[string]bool{}
	for _, k := range known {
		isKnown[k] = true
	}
	var bad []string
	for _, k := range sortedKeys(th) {
		if isKnown[k] {
			continue
		}
		msg := fmt.Sprintf("%q", k)
		if cl := closestMetric(k, known); cl != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", cl)
		}
		bad = append(bad, msg)
	}
	if len(bad) > 0 {
		return fmt.Errorf("compare: unknown metric %s in the thresholds; the metrics are %s", strings.Join(bad, ", "), strings.Join(known, ", "))
	}
	return nil
}

// closestMetric suggests a known name for an unknown one: the closest by
// edit distance, else the one it begins ("latency" for latency_p50).
func closestMetric(k string, known []string) string {
	if cl := policies.Closest(k, known); cl != "" {
		return cl
	}
	lk := strings.ToLower(k)
	for _, n := range known {
		if strings.HasPrefix(n, lk) || strings.HasPrefix(lk, n) {
			return n
		}
	}
	return ""
}
