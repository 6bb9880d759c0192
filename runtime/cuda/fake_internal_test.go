package cuda

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

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

// TestFakeDeviceTime: with KVBENCH_FAKE_US the fake device's launches take
// time one after another: an event recorded behind three launches of 20 ms
// is not done at once, a wait for it returns no sooner than their 60 ms,
// and a wait for the stream no sooner than a fourth's end.
func TestFakeDeviceTime(t *testing.T) {
	b := fakeOf(t, "f32")
	buf := b.Alloc(16)
	must(b.D.Sync())
	fake.mu.Lock()
	fake.perLaunch = 20 * time.Millisecond // as KVBENCH_FAKE_US=20000, after the backend's own setup
	fake.mu.Unlock()
	defer func() {
		fake.mu.Lock()
		fake.perLaunch = 0
		fake.mu.Unlock()
	}()
	ev, err := b.D.NewSyncEvent()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for range 3 {
		b.launch("be_zero", Dim3{1, 1, 1}, Dim3{32, 1, 1}, b.f32(buf), int64(16))
	}
	must(ev.Record())
	if done, err := ev.Done(); err != nil || done {
		t.Fatalf("an event behind 60 ms of work done at once (%v, %v)", done, err)
	}
	b.launch("be_zero", Dim3{1, 1, 1}, Dim3{32, 1, 1}, b.f32(buf), int64(16))
	must(ev.Wait())
	if d := time.Since(t0); d < 60*time.Millisecond {
		t.Fatalf("the event's wait returned after %v, before its 60 ms of work", d)
	}
	if done, err := ev.Done(); err != nil || !done {
		t.Fatalf("the event not done after its wait (%v, %v)", done, err)
	}
	must(b.D.Sync())
	if d := time.Since(t0); d < 80*time.Millisecond {
		t.Fatalf("the stream's wait returned after %v, before its 80 ms of work", d)
	}
	t.Setenv("KVBENCH_FAKE_US", "20000")
	if d := fakeLaunchTime(); d != 20*time.Millisecond {
		t.Fatalf("KVBENCH_FAKE_US=20000: %v a launch", d)
	}
	t.Setenv("KVBENCH_FAKE_US", "x")
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "KVBENCH_FAKE_US") {
			t.Fatalf("KVBENCH_FAKE_US=x: %v, want a panic naming it", r)
		}
	}()
	fakeLaunchTime()
}
