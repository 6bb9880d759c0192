package policies_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
)

func TestFullConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "full", Small: nil, Large: nil})
}

func TestWindowConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "window",
		Small: policies.Params{"window": 24}, Large: policies.Params{"window": 4096}})
}

func TestWindowRepositionConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "window",
		Small: policies.Params{"window": 24, "reposition": true}, Large: policies.Params{"window": 4096, "reposition": true}})
}

func TestStreamingLLMConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "streamingllm",
		Small: policies.Params{"sinks": 4, "recent": 20}, Large: policies.Params{"sinks": 4, "recent": 4092}})
}

func TestStreamingLLMPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "streamingllm", Prompt: 50, LongSteps: 20000,
		Small: policies.Params{"sinks": 4, "recent": 20}, Large: policies.Params{"sinks": 4, "recent": 4092}})
}

func TestStreamingLLMChunkedPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "streamingllm", Prompt: 50, LongSteps: 5000, Prefill: policies.PrefillChunked,
		Small: policies.Params{"sinks": 4, "recent": 20}, Large: policies.Params{"sinks": 4, "recent": 4092}})
}

func TestRandomPromptConformance(t *testing.T) {
	for _, pre := range []policies.Prefill{policies.PrefillDense, policies.PrefillChunked} {
		t.Run(pre.String(), func(t *testing.T) {
			policytest.Run(t, policytest.Case{Policy: "random", Prompt: 70, LongSteps: 5000, Prefill: pre,
				Small: policies.Params{"budget": 24, "seed": 9}, Large: policies.Params{"budget": 4096}})
		})
	}
}

func TestRandomConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "random",
		Small: policies.Params{"budget": 24, "seed": 9}, Large: policies.Params{"budget": 4096}})
}

func TestParamErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		params policies.Params
		want   string
	}{
		{"windw", nil, "did you mean window"},
		{"window", policies.Params{"window": 0}, "out of range"},
		{"window", policies.Params{"window": "abc"}, "not a number"},
		{"window", policies.Params{"window": 10, "windows": 3}, "unknown parameter windows"},
		{"window", policies.Params{"window": 10, "reposition": "maybe"}, "not true or false"},
		{"streamingllm", policies.Params{"sink": 4}, "did you mean sinks"},
		{"random", policies.Params{"budget": 2.5}, "not an integer"},
	} {
		_, err := policies.New(c.name, c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%s, %v) error %v, want it to mention %q", c.name, c.params, err, c.want)
		}
	}
}
