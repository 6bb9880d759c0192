package cuda

import "testing"

// TestSerial: Device.Serial counts the stream's serialising operations
// (copies, memsets, waits, plain launches, graph replays) but not a
// programmatic dependent's launch, nor anything while a capture records;
// fake device.
func TestSerial(t *testing.T) {
	b, err := NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := b.D
	if !d.pdl {
		t.Skip("KVBENCH_PDL=off: every launch is a plain one")
	}
	p, err := d.Alloc(1024)
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.AllocPinned(1024)
	if err != nil {
		t.Fatal(err)
	}
	f := b.fn("be_zero")
	step := func(name string, serialises bool, op func() error) {
		t.Helper()
		s0 := d.Serial()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := d.Serial() != s0; got != serialises {
			t.Errorf("%s: serialised %v, want %v", name, got, serialises)
		}
	}
	step("LaunchAfter", false, func() error { return f.LaunchAfter(Dim3{1, 1, 1}, Dim3{32, 1, 1}, 0, p, int64(1)) })
	step("Launch", true, func() error { return f.Launch(Dim3{1, 1, 1}, Dim3{32, 1, 1}, 0, p, int64(1)) })
	step("CopyAsync", true, func() error { return d.CopyAsync(p, p.Add(512), 256) })
	step("CopyHtoDAsync", true, func() error { return d.CopyHtoDAsync(p, h, 0, 256) })
	step("CopyDtoHAsync", true, func() error { return d.CopyDtoHAsync(h, 0, p, 256) })
	step("Sync", true, d.Sync)
	step("Download", true, func() error { return Download(d, make([]float32, 4), p) })
	step("Upload", true, func() error { return Upload(d, p, make([]float32, 4)) })
	step("Memset32", true, func() error { return d.Memset32(p, 0, 4) })
	step("BeginCapture", false, d.BeginCapture)
	step("a plain launch captured", false, func() error { return f.Launch(Dim3{1, 1, 1}, Dim3{32, 1, 1}, 0, p, int64(1)) })
	var g *Graph
	step("EndCapture", false, func() (err error) { g, err = d.EndCapture(); return err })
	step("the graph's replay", true, g.Launch)
}
