package cuda

import "testing"

// fakeOf is a backend at precision prec on the fake device (NewFakeBackend),
// closed when the test ends.
func fakeOf(t testing.TB, prec string) *Backend {
	t.Helper()
	b, err := NewFakeBackend(prec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
