# xlb build. `make` checks dependencies, compiles the XDP program with clang and
# builds the static binary; `make test` runs every test tier.
GO        ?= go
CLANG     ?= clang
GOARCH    ?= $(shell $(GO) env GOARCH)
HOSTARCH  := $(shell $(GO) env GOHOSTARCH)
MULTIARCH := $(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

# The BPF object is the same for every target architecture (XDP programs see
# only packet data); the UAPI headers come from the build host. -g makes clang
# write BTF (.BTF, .BTF.ext): the loader passes it with each program, for
# global functions and source lines in verifier logs. Source paths in it are
# relative to the repository, so the build directory stays out of the binary.
BPF_CFLAGS := -O2 -g -fdebug-prefix-map=$(CURDIR)=. -mcpu=v3 -target bpf -Wall -Wextra -Werror -Wno-unused-parameter \
	-I/usr/include/$(MULTIARCH)
LLVM_STRIP ?= llvm-strip

KERN_SRC := $(wildcard kern/bpf/*.c kern/bpf/*.h)
TEST_BPF := $(patsubst %.c,%.o,$(wildcard ebpf/testdata/*.c))
GO_SRC   := $(shell find . -name '*.go' -not -path './build/*') go.mod go.sum

ifeq ($(GOARCH),$(HOSTARCH))
BIN := xlb
else
BIN := build/xlb-linux-$(GOARCH)
endif

.PHONY: all deps test test-unit bench clean reliability scale soak

all: deps $(BIN)

deps:
	@bash scripts/deps.sh build

# The embedded object keeps its BTF but not the DWARF -g also writes.
kern/bpf/xlb.o: $(KERN_SRC) Makefile
	$(CLANG) $(BPF_CFLAGS) -c kern/bpf/xlb.c -o $@
	$(LLVM_STRIP) -g $@

# The same programs for IPv6 (kern/bpf/ipfam.h), loaded beside xlb.o's.
kern/bpf/xlb6.o: $(KERN_SRC) Makefile
	$(CLANG) $(BPF_CFLAGS) -DXLB_FAMILY=6 -c kern/bpf/xlb.c -o $@
	$(LLVM_STRIP) -g $@

# The Go side of the layouts of structs.h, generated from the object's BTF and
# kern's Go types (kern/gen): rewritten whenever the object changes. The
# generator runs on the build host, whatever GOARCH the binary is for.
LAYOUT_GEN_SRC := $(filter-out %_test.go kern/zlayout.go,$(wildcard kern/gen/*.go kern/internal/layoutgen/*.go kern/*.go))

kern/zlayout.go: kern/bpf/xlb.o $(LAYOUT_GEN_SRC)
	cd kern && CGO_ENABLED=0 GOARCH=$(HOSTARCH) $(GO) generate

ebpf/testdata/%.o: ebpf/testdata/%.c Makefile
	$(CLANG) $(BPF_CFLAGS) -Ikern/bpf -c $< -o $@

$(BIN): kern/bpf/xlb.o kern/bpf/xlb6.o kern/zlayout.go $(GO_SRC)
	CGO_ENABLED=0 GOARCH=$(GOARCH) $(GO) build -trimpath \
		-ldflags '-s -w -X main.version=$(VERSION)' -o $@ .

# Every tier: pure Go (any user), then packet fixtures and end-to-end tests,
# which need root. Under root they must run: XLB_TEST_ROOT=1 turns a skip for
# missing privileges into a failure.
test: deps
	@bash scripts/deps.sh test
	$(MAKE) --no-print-directory xlb $(TEST_BPF)
	CGO_ENABLED=0 $(GO) vet ./...
	CGO_ENABLED=0 XLB_TEST_ROOT=$$( [ "$$(id -u)" = 0 ] && echo 1 || echo 0 ) \
		$(GO) test -count=1 -timeout 30m ./...

# The benchmarks (bench/, writes docs/BENCHMARKS.md and docs/bench.png), as
# root, about 15 minutes. A quick check of the harness:
#   BENCH_DURATION=2s BENCH_ROUNDS=1 make bench
# Other settings: BENCH_WARMUP, BENCH_OUT, BENCH_BALANCERS, BENCH_WORKLOADS,
# BENCH_KERN=0, BENCH_TOPOLOGY=veth (clients, balancer and workers in three
# namespaces over veth pairs, native XDP: rewrites only its own section of
# docs/BENCHMARKS.md) (see docs/BENCHMARKS.md).
bench: deps
	@bash scripts/deps.sh bench
	$(MAKE) --no-print-directory xlb
	CGO_ENABLED=0 $(GO) run ./bench

# 100,000 client connections held at once through xlb, then through HAProxy
# (scale/, as root, about 4 minutes); writes docs/SCALE.md. A quicker run:
#   SCALE_CLIENTS=20000 make scale
# Other settings: SCALE_BALANCERS, SCALE_OUT (see docs/SCALE.md).
scale: deps
	@bash scripts/deps.sh bench
	$(MAKE) --no-print-directory xlb
	CGO_ENABLED=0 $(GO) run ./scale

# 30 minutes of mixed traffic through xlb while workers are added, drained,
# removed, killed and restarted and xlb restarts with --reuse (soak/, as
# root); fails if xlb's legs, pools, RSS, descriptors, goroutines or map
# memory keep growing, or a request fails that no killed worker explains.
# Writes docs/SOAK.md, docs/soak-results.json and docs/soak.png. Not part of
# `make test`, which runs a 2.5-minute version (TestSoakShort). A quick run:
#   SOAK_DURATION=3m SOAK_OUT=/tmp/soak make soak
# Other settings: SOAK_SAMPLE (10s).
soak: deps
	@bash scripts/deps.sh bench
	$(MAKE) --no-print-directory xlb
	CGO_ENABLED=0 $(GO) run ./soak

# The adversity scenarios of reliability/ in their long versions (root: they
# build namespaces and TAP links); writes docs/RELIABILITY.md.
reliability: deps xlb
	CGO_ENABLED=0 XLB_TEST_ROOT=1 XLB_RELIABILITY=long XLB_RELIABILITY_REPORT=$(CURDIR)/docs/RELIABILITY.md \
		$(GO) test -count=1 -timeout 30m -v ./reliability

clean:
	rm -rf xlb build kern/bpf/*.o ebpf/testdata/*.o
