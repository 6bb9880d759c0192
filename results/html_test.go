package results

import (
	"bytes"
	"context"
	"html"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTMLTable(t *testing.T) {
	var b bytes.Buffer
	data := []byte("name,value,status\n\"<b>x</b> & y\",1.5,failed\nz,\"a,b\",ok\nn,155.03338943962044,32768\nm,0.25,\n")
	if err := htmlWriteTable(&b, data, "t"); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		`<th scope="col" title="name">name</th>`, `<td>&lt;b&gt;x&lt;/b&gt; &amp; y</td>`, `<td class="num">1.5</td>`,
		`<td class="failed">failed</td>`, `<td>a,b</td>`, `<td class="num" title="155.03338943962044">155</td>`,
		`<td class="num">32768</td>`, `<td class="num">0.25</td>`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %s:\n%s", want, s)
		}
	}
	if strings.Contains(s, "<b>") {
		t.Errorf("unescaped text")
	}
}

const rptChromium = "/usr/bin/chromium"

// rptLoadProbe, put into a copy of the page, counts on load the images that
// decoded.
const rptLoadProbe = `<script>
window.addEventListener("load", function () {
  var n = 0;
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    if (im.complete && im.naturalWidth > 0) n++;
  }
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.imagesLoaded = String(n);
});
</script>
`

// TestReportInChromium renders index.html in headless Chromium: every
// image must load, and a screenshot must come out. Set
// KVBENCH_REPORT_KEEP=dir to keep the report and the screenshot.
func TestReportInChromium(t *testing.T) {
	if _, err := os.Stat(rptChromium); err != nil {
		t.Skipf("no %s (apt-get install -y chromium): %v", rptChromium, err)
	}
	// The fixture, its model synthetic and its text a long path.
	recs := rptFixtureRecords()
	for i := range recs {
		recs[i].ModelPath = "synthetic:tiny"
		if recs[i].Task == "perplexity" {
			recs[i].TaskParams["text"] = "/nowhere/deep/down/data/river.txt"
		}
	}
	files, err := Report(t.TempDir(), recs)
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(files.HTML)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	probe := filepath.Join(tmp, "probe.html")
	withProbe := strings.Replace(string(page), "</body>", rptLoadProbe+"</body>", 1)
	if err := os.WriteFile(probe, []byte(withProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-dev-shm-usage", "--user-data-dir=" + filepath.Join(tmp, "profile")}
		cmd := exec.CommandContext(ctx, rptChromium, append(base, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
		}
		return stdout.Bytes()
	}

	dom := run("--virtual-time-budget=10000", "--dump-dom", "file://"+probe)
	m := regexp.MustCompile(`data-images="(\d+)" data-images-loaded="(\d+)"`).FindSubmatch(dom)
	if m == nil {
		t.Fatalf("no load probe result in the DOM:\n%.2000s", dom)
	}
	total, _ := strconv.Atoi(string(m[1]))
	loaded, _ := strconv.Atoi(string(m[2]))
	if total != len(files.Plots) || loaded != total {
		t.Errorf("%d of %d images loaded, want %d", loaded, total, len(files.Plots))
	}
	// The tables came through as tables.
	if n := bytes.Count(dom, []byte(`<table class="data"`)); n != len(files.CSV) {
		t.Errorf("%d data tables in the DOM, want %d", n, len(files.CSV))
	}
	if !bytes.Contains(dom, []byte(html.EscapeString("cuda: out of memory | allocating <kv> & retrying"))) {
		t.Errorf("failure reason not in the DOM")
	}
	// The summary: a ranking table per task with a score.
	if n := bytes.Count(dom, []byte(`<table class="summary"`)); n != 3 {
		t.Errorf("%d ranking tables in the DOM, want 3", n)
	}
	if !bytes.Contains(dom, []byte(`<table class="summary overview" aria-label="passkey: accuracy vs KV budget"`)) {
		t.Errorf("no passkey accuracy-vs-budget table in the DOM")
	}
	// The charts that compare, each an image that loaded (counted above).
	for _, name := range []string{"perplexity_vs_budget", "passkey_vs_budget", "needle_vs_budget",
		"passkey_pareto_memory", "latency_vs_context_passkey", "memory_vs_context_needle"} {
		if !bytes.Contains(dom, []byte(`<figure id="plot-`+name+`">`)) {
			t.Errorf("no figure %s in the DOM", name)
		}
	}
	// Above everything: the random-weights note and the failures, linked.
	top := bytes.Index(dom, []byte(`<section id="run">`))
	note := bytes.Index(dom, []byte(html.EscapeString(SyntheticNote)))
	fails := bytes.Index(dom, []byte(`<a href="#failed-task-needle">needle: 1</a>`))
	if note < 0 || note > top || fails < 0 || fails > top {
		t.Errorf("note at %d, failures at %d, the run at %d: want both above the run", note, fails, top)
	}
	if !bytes.Contains(dom, []byte(`<h3 id="failed-task-needle">`)) {
		t.Errorf("the failures' link has no target")
	}
	// People's column names and numbers; the path shortened, whole on hover.
	for _, want := range []string{">KV read per step</th>", ">attention p50</th>", " MiB</td>", " µs</td>",
		"text=…/data/river.txt", `title="text=/nowhere/deep/down/data/river.txt`} {
		if !bytes.Contains(dom, []byte(want)) && !bytes.Contains(dom, []byte(html.EscapeString(want))) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if bytes.Contains(dom, []byte(">kv_bytes_read_per_step<")) {
		t.Errorf("a raw column name in the DOM")
	}

	shot := filepath.Join(tmp, "shot.png")
	run("--screenshot="+shot, "--window-size=1280,4000", "--hide-scrollbars", "file://"+files.HTML)
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 3000 {
		t.Errorf("screenshot is %v", b)
	}
	if n := rptDistinctColors(img, 200); n < 100 {
		t.Errorf("screenshot has %d colours: blank?", n)
	}
	if keep := os.Getenv("KVBENCH_REPORT_KEEP"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, p := range append(files.Paths(), shot) {
			if b, err := os.ReadFile(p); err == nil {
				os.WriteFile(filepath.Join(keep, filepath.Base(p)), b, 0o644)
			}
		}
	}
}
