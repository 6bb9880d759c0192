package runtime

import "testing"

// RSSMappedForTest is the resident memory of the mappings the tensors point
// into, for the tests of package runtime_test (see rssMapped).
func RSSMappedForTest(t testing.TB, tensors []*Tensor) int64 {
	t.Helper()
	return rssMapped(t, tensors)
}
