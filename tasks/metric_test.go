package tasks

import (
	"strings"
	"testing"
)

// TestDeclaredMetrics checks every registered task's declarations: compare
// gates a metric by them, so each needs a valid name and direction, names are
// unique within a task, and a fraction must be declared as one.
func TestDeclaredMetrics(t *testing.T) {
	for _, name := range Names() {
		task, _ := Lookup(name)
		seen := map[string]bool{}
		for _, m := range task.Metrics() {
			if err := m.Validate(); err != nil {
				t.Errorf("task %s: %v", name, err)
			}
			if seen[m.Name] {
				t.Errorf("task %s: metric %s declared twice", name, m.Name)
			}
			seen[m.Name] = true
		}
	}
	for task, metric := range map[string]string{"passkey": "accuracy", "needle": "score"} {
		tk, err := Lookup(task)
		if err != nil {
			t.Fatal(err)
		}
		if m := tk.Metrics()[0]; m.Name != metric || m.Unit != UnitFraction || m.Better != BetterHigher {
			t.Errorf("task %s declares %+v, want %s as a higher-is-better fraction", task, m, metric)
		}
	}
}

func TestMetricValidate(t *testing.T) {
	for _, m := range []Metric{{Name: "ppl", Better: BetterLower}, {Name: "accuracy", Unit: UnitFraction, Better: BetterHigher}} {
		if err := m.Validate(); err != nil {
			t.Errorf("%+v: %v", m, err)
		}
	}
	for m, want := range map[Metric]string{
		{Name: "", Better: BetterLower}:         "name must be non-empty",
		{Name: "a b", Better: BetterLower}:      "without spaces",
		{Name: "a,b", Better: BetterLower}:      "commas",
		{Name: "ppl", Better: "down"}:           `better is "down"`,
		{Name: "ppl", Unit: "nats", Better: ""}: `better is ""`,
	} {
		err := m.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one containing %q", m, err, want)
		}
	}
}
