# The two README commands. CMake does the building; this file only strings the steps together.
#   make bench   install missing Debian packages, build, run tally-perf allreduce on 4 local ranks
#   make test    install missing Debian packages, build, run the whole suite, then again under
#                AddressSanitizer and UndefinedBehaviorSanitizer, then the multi-threaded tests
#                under ThreadSanitizer
#   make test-rdma  the verbs tests inside a Soft-RoCE VM (CI runs it after make test)
#   make torch   install Debian's PyTorch, build the tally_torch backend (python/) into $(BUILD)/python/lib
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)

.PHONY: all deps torch-deps build bench torch test test-release test-sanitize test-tsan test-rdma install clean fuzz

all: build

deps:
	bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

bench: build
	$(BUILD)/tally-perf allreduce -N 4 -b 8 -e 64M

test: test-release test-sanitize test-tsan

# The PyTorch group takes under a minute to install here; where apt cannot install it, the suite
# still runs and ctest reports test_torch as skipped.
test-release: build torch-deps
	cd $(BUILD) && ctest --output-on-failure

torch-deps:
	bash scripts/install-deps.sh torch || echo "make: Debian's PyTorch could not be installed; test_torch will be SKIPPED"

# The PyTorch backend against this build tree: PYTHONPATH=$(BUILD)/python/lib /usr/bin/python3
# then `import tally_torch`. Two compiler processes at most (torch's headers are heavy).
torch: build
	bash scripts/install-deps.sh torch
	bash python/build.sh $(BUILD)

test-sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTALLY_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure

# The verbs tests (ctest label `verbs`) inside a Debian VM whose kernel has Soft-RoCE (rxe0), built
# once and cached (tests/rdma-vm/run.sh); a host that cannot run the VM says why and skips (77).
test-rdma: build
	BUILD=$(BUILD) RDMA_VM_TIMEOUT=1500 bash tests/rdma-vm/run.sh || [ $$? -eq 77 ]

# Fuzz every parser of network input with libFuzzer for FUZZ_SECONDS (default 600) per target.
fuzz:
	bash scripts/install-deps.sh fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) JOBS=$(JOBS) bash fuzz/run.sh

test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTALLY_TSAN=ON >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	cd $(TSAN_BUILD) && ctest --output-on-failure

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) build-fuzz
