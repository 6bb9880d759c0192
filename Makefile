# kvbench: build, test, demo, benchmarks, lint. Pure Go: no cgo, no GPU needed.
GO      ?= go
BIN     := bin/kvbench
export CGO_ENABLED := 0

.PHONY: build test demo bench lint clean

build:
	$(GO) build -o $(BIN) ./cmd/kvbench

# The test command of the README and of CI (.ci/run). Fuzz seed corpora run too.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# A first run with no files at all: the built-in synthetic model.
demo: build
	./$(BIN) generate --model synthetic:tiny --prompt "Once upon a time" --steps 48 --stats
	./$(BIN) score --model synthetic:tiny --text README.md --tokens 512

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
