# perq: build, test, benchmark.
#   make            programs into build/bin/
#   make check      the whole suite (unit tests under ASan+UBSan, references, integration, fuzz smoke)
#   make bench      benchmark figures
# Sources are found by pattern: worker/*.c and proto/*.c make libperq, server/*.c
# make libperqd, files named main_*.c are programs, tests/unit/test_*.c are tests.

CC      ?= cc
PREFIX  ?= /usr/local
BUILD   := build
PERQ_SHARED ?= $(abspath ../shared)
export PERQ_SHARED

PKGS    := libmicrohttpd jansson libuv sqlite3 openblas libcrypto libpcre2-8 libutf8proc
CPPFLAGS += -Iinclude -Iworker -Iserver -Iproto -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS))
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -Wall -Wextra -Werror -pthread -fopenmp
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread -fopenmp
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

LIB_SRC    := $(filter-out %/main_%.c,$(wildcard worker/*.c proto/*.c))
SERVER_SRC := $(filter-out %/main_%.c,$(wildcard server/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
PROGRAMS   := $(BUILD)/bin/perq $(BUILD)/bin/perq-worker $(BUILD)/bin/perqd

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all check unit unit-plain integration reference fuzz-smoke bench experiment clean install
all: $(PROGRAMS)

# ---- normal build -------------------------------------------------------
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libperq.a: $(call obj,$(BUILD),$(LIB_SRC))
	@rm -f $@; ar rcs $@ $^
$(BUILD)/libperqd.a: $(call obj,$(BUILD),$(SERVER_SRC))
	@rm -f $@; ar rcs $@ $^

$(BUILD)/bin/perq: $(BUILD)/obj/worker/main_perq.o $(BUILD)/libperq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/bin/perq-worker: $(BUILD)/obj/worker/main_worker.o $(BUILD)/libperq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/bin/perqd: $(BUILD)/obj/server/main_perqd.o $(BUILD)/libperqd.a $(BUILD)/libperq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libperqd.a $(BUILD)/libperq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -lcmocka -o $@

# ---- sanitizer build (unit tests) ----------------------------------------
$(BUILD)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@
$(BUILD)/asan/libperq.a: $(call obj,$(BUILD)/asan,$(LIB_SRC))
	@rm -f $@; ar rcs $@ $^
$(BUILD)/asan/libperqd.a: $(call obj,$(BUILD)/asan,$(SERVER_SRC))
	@rm -f $@; ar rcs $@ $^
$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/unit/%.o $(BUILD)/asan/libperqd.a $(BUILD)/asan/libperq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $^ $(LDLIBS) -lcmocka -o $@

UNIT_BINS      := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
UNIT_ASAN_BINS := $(patsubst tests/unit/%.c,$(BUILD)/asan/tests/%,$(UNIT_SRC))

# ---- fuzz targets: libFuzzer with clang, a replay driver otherwise ---------
# The library is compiled once with the fuzzer's instrumentation (at -O1, where clang
# cannot vectorise every "omp simd" loop: -Wno-pass-failed), then linked
# into each target.
FUZZ_CC := $(shell command -v clang 2>/dev/null)
ifneq ($(FUZZ_CC),)
FUZZ_CFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_LFLAGS := -fsanitize=fuzzer,address,undefined
FUZZ_MAIN   :=
else
FUZZ_CC     := $(CC)
FUZZ_CFLAGS := $(SAN)
FUZZ_LFLAGS := $(SAN)
FUZZ_MAIN   := $(BUILD)/fuzz/obj/tests/fuzz/replay_main.o
endif
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -std=c11 -O1 -g -Wall -Wextra -Werror -Wno-pass-failed -pthread -fopenmp $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/libperq.a: $(call obj,$(BUILD)/fuzz,$(LIB_SRC))
	@rm -f $@; ar rcs $@ $^
$(BUILD)/fuzz/libperqd.a: $(call obj,$(BUILD)/fuzz,$(SERVER_SRC))
	@rm -f $@; ar rcs $@ $^
$(BUILD)/fuzz/%: $(BUILD)/fuzz/obj/tests/fuzz/%.o $(FUZZ_MAIN) $(BUILD)/fuzz/libperqd.a $(BUILD)/fuzz/libperq.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -pthread -fopenmp $(FUZZ_LFLAGS) $^ $(LDLIBS) -o $@

# ---- suites ---------------------------------------------------------------
check: all unit reference integration fuzz-smoke
	@echo "make check: all suites passed"

unit: $(UNIT_ASAN_BINS)
	@tests/run-unit.sh $(UNIT_ASAN_BINS)

unit-plain: $(UNIT_BINS)
	@tests/run-unit.sh $(UNIT_BINS)

reference: all
	@tests/run-reference.sh

integration: all
	@tests/run-integration.sh

fuzz-smoke: $(FUZZ_BINS)
	@tests/run-fuzz.sh $(FUZZ_BINS)

bench: all
	@tests/bench/run.sh

experiment: all
	@tests/bench/experiment.sh

clean:
	rm -rf $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/

.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
