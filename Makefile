# kvbench: build, test, demo, benchmarks, lint. Pure Go: no cgo, no GPU needed.
GO      ?= go
BIN     := bin/kvbench
REV     := $(shell git rev-parse HEAD 2>/dev/null)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION) -X main.buildRevision=$(REV)
export CGO_ENABLED := 0

.PHONY: build test demo bench lint clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/kvbench

# The test command of the README and of CI (.ci/run). Fuzz seed corpora run too.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The smoke suite (synthetic model, every policy, all three tasks; no files
# needed) and its report. It takes seconds, so each demo starts afresh (a
# resumed directory refuses results of another binary).
demo: build
	rm -rf out/smoke
	./$(BIN) run configs/smoke.yaml --out out/smoke
	./$(BIN) report out/smoke
	@echo "demo: open out/smoke/index.html (or read out/smoke/report.md)"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
