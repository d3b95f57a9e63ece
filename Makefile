# fine: build, test, install. `make deps && make`, then `make test`.
#   make SANITIZE=1 test   the same tests under AddressSanitizer + UBSan (separate build tree)
#   make install PREFIX=/usr/local
#   make bench             the benchmarks under bench/

PREFIX  ?= /usr/local
PYTHON  ?= /usr/bin/python3
CC      ?= cc
SANITIZE ?= 0
VERSION := 0.1.0

ifeq ($(SANITIZE),1)
BUILD   := build/san
BIN     := build/san/bin
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   := build/release
BIN     := bin
SANFLAGS :=
endif

# OpenBLAS: the OpenMP build when it is installed (Debian libopenblas-openmp-dev), linked by
# path with an rpath. Its GEMMs then share our OpenMP threads; the pthread build's threads and
# OpenMP's spin-waiting threads fight over the cores (tiny-model training 2.4x slower on 2 cores).
OPENBLAS_OMP := /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_OMP)/libopenblas.so),)
BLAS_LIBS := -L$(OPENBLAS_OMP) -Wl,-rpath,$(OPENBLAS_OMP) -lopenblas
BLAS_CFLAGS := $(shell PKG_CONFIG_PATH=$(OPENBLAS_OMP)/pkgconfig pkg-config --cflags openblas 2>/dev/null)
else
BLAS_LIBS := $(shell pkg-config --libs openblas 2>/dev/null)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
endif
DEP_CFLAGS := $(shell pkg-config --cflags libzstd msgpack libpng 2>/dev/null) $(BLAS_CFLAGS) -I/usr/include/nifti
DEP_LIBS   := $(shell pkg-config --libs libzstd msgpack libpng 2>/dev/null) $(BLAS_LIBS) \
              -lnifti2 -lznz -lz -lm -lpthread

# CUDA backend: built when nvcc and cuDNN are found (CUDA=0 turns it off; the sanitizer tree
# leaves it out, the CUDA runtime and ASan do not mix). CUDNN_HOME: a folder with include/cudnn.h
# and lib64/ or lib/ holding libcudnn.so.9; default the CUDA folder, else the nvidia-cudnn wheel.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
ifeq ($(SANITIZE),1)
CUDA ?= 0
endif
ifeq ($(wildcard $(NVCC)),)
CUDA ?= 0
endif
ifneq ($(CUDA),0)
CUDNN_HOME ?= $(firstword $(foreach d,$(CUDA_HOME) $(shell $(PYTHON) -c \
    'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null),$(if $(wildcard $(d)/include/cudnn.h),$(d))))
CUDNN_LIBDIR := $(firstword $(foreach d,lib64 lib,$(if $(wildcard $(CUDNN_HOME)/$(d)/libcudnn.so.9),$(CUDNN_HOME)/$(d))))
ifeq ($(CUDNN_LIBDIR),)
CUDA := 0
$(info make: nvcc found but no cuDNN 9 (set CUDNN_HOME); building without the CUDA backend)
else
CUDA := 1
endif
endif
ifeq ($(CUDA),1)
CUDA_LIBDIR := $(CUDA_HOME)/lib64
NVCCFLAGS := -std=c++17 -O2 -lineinfo -Xcompiler -fPIC -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -Xcompiler -Wall,-Wextra,-Werror -Ilib -I$(CUDNN_HOME)/include
CUDA_SRC  := $(sort $(wildcard lib/nn/cuda/*.cu))
CUDA_OBJ  := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
# The CUDA backend is a shared object that tools load only when asked for a GPU (backend.c):
# the CUDA libraries cost every tool start about half a second. It carries position-independent
# copies of the two library files it calls into.
CUDA_SO   := $(BUILD)/lib/fine/libfine-cuda.so
CUDA_PIC  := $(BUILD)/pic/lib/error.o $(BUILD)/pic/lib/nn/conv_cache.o
CUDA_DEFS := -DFINE_HAVE_CUDA -DFINE_CUDA_SO=\"$(abspath $(CUDA_SO))\"
CUDA_LIBS := -Wl,--as-needed -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart -lcublas \
             $(CUDNN_LIBDIR)/libcudnn.so.9 -Wl,-rpath,$(CUDNN_LIBDIR) -lstdc++ -Wl,--no-as-needed
endif

CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -fopenmp -DFINE_VERSION=\"$(VERSION)\" -Wall -Wextra -Werror \
              $(CFLAGS) $(SANFLAGS) $(CUDA_DEFS) -Ilib $(DEP_CFLAGS) -MMD -MP
ALL_LDFLAGS := -fopenmp $(SANFLAGS) $(LDFLAGS)

LIB_SRC   := $(sort $(wildcard lib/*.c lib/*/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB_A     := $(BUILD)/libfine.a
TOOL_SRC  := $(sort $(wildcard tools/*.c))
TOOLS     := $(TOOL_SRC:tools/%.c=$(BIN)/%)
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNITS     := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HELP_SRC  := $(sort $(wildcard tests/helpers/*.c))
HELPERS   := $(HELP_SRC:tests/helpers/%.c=$(BUILD)/tests/helpers/%)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
GPU_SRC   := $(sort $(wildcard tests/gpu/*.c))
GPUTESTS  := $(GPU_SRC:tests/gpu/%.c=$(BUILD)/tests/gpu/%)
LINK_LIBS := $(DEP_LIBS) -ldl

.PHONY: all deps test test-long bench install clean demo

all: $(LIB_A) $(TOOLS) $(UNITS) $(HELPERS) $(BENCHES) $(GPUTESTS) $(if $(CUDA_OBJ),$(CUDA_SO))

$(BUILD)/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu $(wildcard lib/*.h lib/nn/*.h lib/nn/cuda/*.h) Makefile
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(DEP_CFLAGS) -c $< -o $@

$(BUILD)/pic/%.o: %.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -c $< -o $@

$(CUDA_SO): $(CUDA_OBJ) $(CUDA_PIC) Makefile
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-Bsymbolic -Wl,--no-undefined $(CUDA_OBJ) $(CUDA_PIC) $(CUDA_LIBS) -lm -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/%: $(BUILD)/tools/%.o $(LIB_A) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) $< $(LIB_A) $(LINK_LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB_A) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) $< $(LIB_A) $(LINK_LIBS) -o $@

$(BUILD)/tests/helpers/%: $(BUILD)/tests/helpers/%.o $(LIB_A) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) $< $(LIB_A) $(LINK_LIBS) -o $@

$(BUILD)/tests/gpu/%: $(BUILD)/tests/gpu/%.o $(LIB_A) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) $< $(LIB_A) $(LINK_LIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB_A) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) $< $(LIB_A) $(LINK_LIBS) -o $@

# Debian packages the build, the tests and the independent Python cross-checks need.
DEB_PKGS := build-essential pkg-config libnifti2-dev zlib1g-dev libzstd-dev libmsgpack-dev libopenblas-dev \
            libopenblas-openmp-dev libpng-dev chromium \
            bats zstd python3 python3-numpy python3-msgpack python3-zstandard python3-nibabel \
            python3-scipy
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "make deps: installing$$(echo $$missing | sed 's/^/ /')"; \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "make deps: all present"; fi

# Unit tests (C, TAP output) and bats tests; tests/run prints "N passed, N failed".
test: all
	@FINE_BIN=$(abspath $(BIN)) FINE_UNIT=$(abspath $(BUILD)/tests) \
	    FINE_HELPERS=$(abspath $(BUILD)/tests/helpers) FINE_GPUTESTS=$(abspath $(BUILD)/tests/gpu) \
	    FINE_PYTHON=$(PYTHON) FINE_CUDA=$(CUDA) \
	    FINE_SANITIZE=$(SANITIZE) FINE_SHARED=$(abspath ../shared) tests/run

# Tests that take minutes (the one-case overfit figure of issue 5): not part of make test.
test-long: all
	@FINE_BIN=$(abspath $(BIN)) FINE_PYTHON=$(PYTHON) FINE_HELPERS=$(abspath $(BUILD)/tests/helpers) \
	    bats --tap tests/long

# The main job on synthetic data: fine-synth cases through the whole pipeline (pipelines/Makefile).
demo: all
	@$(MAKE) --no-print-directory -C pipelines demo

bench: all
	@FINE_BIN=$(abspath $(BIN)) FINE_BENCH=$(abspath $(BUILD)/bench) FINE_BENCH_SRC=$(abspath bench) \
	    FINE_PYTHON=$(PYTHON) bench/run

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/fine \
	    $(DESTDIR)$(PREFIX)/share/fine/python
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	$(if $(CUDA_OBJ),install -d $(DESTDIR)$(PREFIX)/lib/fine && install -m 755 $(CUDA_SO) $(DESTDIR)$(PREFIX)/lib/fine/)
	install -d $(DESTDIR)$(PREFIX)/include/fine/nn
	install -m 644 $(filter-out lib/stream_internal.h,$(wildcard lib/*.h)) $(DESTDIR)$(PREFIX)/include/fine/
	install -m 644 $(filter-out lib/nn/ops_vec.h,$(wildcard lib/nn/*.h)) $(DESTDIR)$(PREFIX)/include/fine/nn/
	install -m 644 formats/python/fine_stream.py $(DESTDIR)$(PREFIX)/share/fine/python/

clean:
	rm -rf build bin

-include $(CUDA_PIC:%.o=%.d) $(LIB_SRC:%.c=$(BUILD)/%.d) $(GPU_SRC:%.c=$(BUILD)/%.d) $(TOOL_SRC:%.c=$(BUILD)/%.d) $(UNIT_SRC:%.c=$(BUILD)/%.d) $(HELP_SRC:%.c=$(BUILD)/%.d) $(BENCH_SRC:%.c=$(BUILD)/%.d)
