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

# The demo suite: the project's own reference model (models/kvbench-ref-7m,
# which retrieves), five cache policies at two budgets, passkey and perplexity
# past the trained context, on the CPU in a few minutes; then its report, whose
# summary is printed. Each demo starts afresh (a resumed directory refuses
# results of another binary). The synthetic smoke suite stays for tests.
demo: build
	rm -rf out/demo
	./$(BIN) run configs/demo.yaml --out out/demo
	./$(BIN) report out/demo
	@awk '/^## Summary/{on=1} on && /^## / && !/^## Summary/{exit} on && !/^!\[/ && !/^\[PNG\]/' out/demo/report.md
	@echo "demo: the whole report is out/demo/index.html (or out/demo/report.md)"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
