# SPDX-License-Identifier: MIT
# tusknetd - build, set-up, tests.
#
#   make run        install missing Debian packages (as root), build, run on tusknetd.conf.example
#   make test       same set-up, then every test (unit, integration, reference check),
#                   ending with one line: tests: N passed, N failed
#   make test SANITIZE=1   the same built with ASan+UBSan
#   make fuzz       libFuzzer on the config parsers (FUZZ_SECONDS each, default 60)
#   make bench      the performance benchmarks side by side with the peers
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        the Debian package (dpkg-buildpackage, lintian) into build/deb/

SHELL   := /bin/bash
ifeq ($(origin CC),default)
CC      := gcc
endif
PREFIX  ?= /usr/local
DESTDIR ?=
SANITIZE ?= 0
FUZZ_SECONDS ?= 60
PYTHON  := /usr/bin/python3

# As packagers expect: CPPFLAGS, CFLAGS and LDFLAGS from the environment or
# the command line (dpkg-buildflags' hardening: _FORTIFY_SOURCE, stack
# protector, relro, now) are used, and the user's CFLAGS come after ours so
# that they win. The sanitizer build adds its own flags last.
CFLAGS  ?= -O2 -g
ifeq ($(SANITIZE),1)
BUILD   := build/sanitize
SAN     := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
else
BUILD   := build/release
SAN     :=
LDSAN   :=
endif

PKGS    := libevent libevent_openssl openssl libwebsockets yaml-0.1 libsystemd zlib hiredis
# snprintf truncating a message is the intended behaviour, not a bug to warn about
WARN    := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE
ifneq ($(findstring clang,$(shell $(CC) --version 2>/dev/null | head -1)),clang)
WARN    += -Wno-format-truncation
endif
TN_CFLAGS = $(WARN) -Isrc -Iinclude -MMD -MP $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(SAN)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm

# Debian 12 packages: to build, to test, to benchmark.
DEB_BUILD := gcc make pkg-config libevent-dev libssl-dev libwebsockets-dev libyaml-dev \
             libsystemd-dev libhttp-parser-dev zlib1g-dev libhiredis-dev
DEB_TEST  := libcmocka-dev python3 python3-pytest python3-websockets curl socat clang \
             libclang-rt-14-dev openssl procps iproute2 prometheus systemd chromium logrotate \
             groff-base redis-server nginx-light redis-tools
DEB_BENCH := redis-tools redis-server wrk nginx-light util-linux node-ws haproxy nutcracker
# to build the Debian package (make deb)
DEB_PACKAGE := debhelper dpkg-dev fakeroot lintian

CORE_SRCS := $(filter-out src/main.c src/tusknetctl.c src/ctl/%,$(wildcard src/*.c src/*/*.c))
# tusknetctl links its own modules under src/ctl/ and none of the daemon's.
CTL_OBJS := $(patsubst src/%.c,$(BUILD)/%.o,src/tusknetctl.c $(wildcard src/ctl/*.c))
CONFIG_SRCS := $(wildcard src/config/*.c)
CORE_OBJS := $(CORE_SRCS:src/%.c=$(BUILD)/%.o)
CONFIG_OBJS := $(CONFIG_SRCS:src/%.c=$(BUILD)/%.o)
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

.PHONY: all deps deps-test deps-bench run test unit unit-build integration reference \
        fuzz bench install clean man install-man install-completion install-dev deps-deb deb deb-check

CTL := $(if $(wildcard src/tusknetctl.c),$(BUILD)/tusknetctl)

# The example plugins (examples/plugins/*.c) see only the public header.
PLUGINS := $(patsubst examples/plugins/%.c,$(BUILD)/plugins/%.so,$(wildcard examples/plugins/*.c))

all: $(BUILD)/tusknetd $(CTL) $(PLUGINS)

define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "tusknetd: missing Debian packages:$$missing"; \
	    echo "Run 'make $@' as root to install them, or: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	  echo "Installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
endef

deps:
	$(call install_missing,$(DEB_BUILD))

deps-test: deps
	$(call install_missing,$(DEB_TEST))

deps-bench: deps-test
	$(call install_missing,$(DEB_BENCH))

deps-deb: deps
	$(call install_missing,$(DEB_PACKAGE))

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(TN_CFLAGS) -c $< -o $@

# What `info` and tusknet_build_info report: the source revision and when the
# build last compiled anything (metrics_export.o is rebuilt after any other object;
# SOURCE_DATE_EPOCH fixes the date for reproducible builds).
BUILD_GIT  := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
BUILD_DATE := $(shell date -u -d @$${SOURCE_DATE_EPOCH:-$$(date +%s)} +%Y-%m-%dT%H:%M:%SZ)
$(BUILD)/metrics_export.o: private CFLAGS += -DTN_BUILD_GIT='"$(BUILD_GIT)"' -DTN_BUILD_DATE='"$(BUILD_DATE)"'
$(BUILD)/metrics_export.o: $(filter-out $(BUILD)/metrics_export.o,$(CORE_OBJS) $(BUILD)/main.o)

$(BUILD)/tusknetd: $(BUILD)/main.o $(CORE_OBJS)
	$(CC) $(LDFLAGS) $(LDSAN) $^ $(PKG_LIBS) -o $@

$(BUILD)/plugins/%.so: examples/plugins/%.c include/tusknet/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -Iinclude -fPIC -shared -fvisibility=hidden $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(SAN) $(LDFLAGS) $< -o $@

$(BUILD)/tusknetctl: $(CTL_OBJS)
	$(CC) $(LDFLAGS) $(LDSAN) $^ -o $@

$(BUILD)/tests/%: tests/unit/%.c $(CORE_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(TN_CFLAGS) $(LDFLAGS) $< $(CORE_OBJS) $(PKG_LIBS) -lcmocka $(LDSAN) -o $@

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/tusknetd -c tusknetd.conf.example

# Integration tests run even when a unit test failed; the last line counts both:
# "tests: N passed, N failed" (the form CI reads), and any failure fails the target.
test: deps-test
	@$(MAKE) --no-print-directory all unit-build
	@rm -f $(BUILD)/unit-results.json $(BUILD)/integration.xml
	@rc=0; \
	  $(MAKE) --no-print-directory unit || rc=1; \
	  $(MAKE) --no-print-directory integration || rc=1; \
	  $(PYTHON) tests/tools/tally.py total $(BUILD)/unit-results.json $(BUILD)/integration.xml || rc=1; \
	  exit $$rc

unit-build: $(UNIT_TESTS)

unit: $(UNIT_TESTS)
	@$(PYTHON) tests/tools/tally.py unit $(BUILD)/unit-results.json $(UNIT_TESTS)

integration:
	TUSKNETD=$(abspath $(BUILD)/tusknetd) TUSKNETCTL=$(abspath $(BUILD)/tusknetctl) SANITIZE=$(SANITIZE) \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider --junitxml=$(BUILD)/integration.xml tests/integration

# The README's config reference is generated from the schema table.
reference: $(BUILD)/tusknetd
	$(PYTHON) tests/tools/reference.py update README.md $(BUILD)/tusknetd

# tusknetd.conf(5)'s key reference is generated from the same table.
man: $(BUILD)/tusknetd
	$(PYTHON) tests/tools/manref.py update man/tusknetd.conf.5 $(BUILD)/tusknetd

FUZZ_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -g -O1 -Isrc -Iinclude -fsanitize=fuzzer,address,undefined
# The network fuzzers run the daemon's own code in-process: the core is built
# once with coverage instrumentation, then linked into one harness per target.
FUZZ_NET_TARGETS := http line ws ctl
FUZZ_OBJS := $(CORE_SRCS:src/%.c=build/fuzz/obj/%.o)
# kept between runs: make would otherwise delete them as intermediates and rebuild them every time
.SECONDARY: $(FUZZ_OBJS)
build/fuzz/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	clang $(filter-out -fsanitize=fuzzer%,$(FUZZ_CFLAGS)) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP $(PKG_CFLAGS) -c $< -o $@
build/fuzz/fuzz_net_%: tests/fuzz/fuzz_net.c $(FUZZ_OBJS)
	clang $(FUZZ_CFLAGS) $(PKG_CFLAGS) -DFUZZ_TARGET=$(call fuzz_net_id,$*) $^ $(PKG_LIBS) -o $@
fuzz_net_id = $(if $(filter http,$(1)),1,$(if $(filter line,$(1)),2,$(if $(filter ws,$(1)),3,4)))

fuzz: deps-test
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) src/config/value.c src/config/tusk.c tests/fuzz/fuzz_tusk.c -o build/fuzz/fuzz_tusk
	clang $(FUZZ_CFLAGS) src/config/value.c src/config/yaml.c tests/fuzz/fuzz_yaml.c -lyaml -o build/fuzz/fuzz_yaml
	@$(MAKE) --no-print-directory -j2 $(FUZZ_NET_TARGETS:%=build/fuzz/fuzz_net_%)
	@# what libFuzzer wrote in an earlier run is not this run's finding
	@rm -f build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-*
	@for f in tusk yaml $(FUZZ_NET_TARGETS:%=net_%); do \
	  rm -rf build/fuzz/corpus-$$f && mkdir -p build/fuzz/corpus-$$f && cp tests/fuzz/corpus/$$f/* build/fuzz/corpus-$$f/; \
	  echo "== fuzz_$$f for $(FUZZ_SECONDS)s"; \
	  (cd build/fuzz && ./fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	     -print_final_stats=1 corpus-$$f 2>&1 | grep -E "^(stat::number_of_executed_units|SUMMARY|==[0-9]+==ERROR|Done|fuzz_net:)" ) ; \
	  ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* 2>/dev/null | grep -q . && { echo "fuzz_$$f found a failure"; exit 1; }; \
	done; echo "fuzz: no crash, leak or timeout"

bench: deps-bench
	@$(MAKE) --no-print-directory all
	$(PYTHON) tests/bench/bench.py --tusknetd $(BUILD)/tusknetd

# The installed config serves the installed site: its file handler's root
# is rewritten from the example's ./conf/www to SHARE/www. An existing
# /etc/tusknetd/tusknetd.conf is never overwritten.
SHARE := $(PREFIX)/share/tusknetd
install: all install-man install-completion install-dev
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)/etc/tusknetd \
	  $(DESTDIR)$(SHARE)/www $(DESTDIR)$(SHARE)/examples
	install -m 755 $(BUILD)/tusknetd $(CTL) $(DESTDIR)$(PREFIX)/bin/
	sed 's|/usr/local|$(PREFIX)|g' systemd/tusknetd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/tusknetd.service
	install -m 644 systemd/tusknetd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/
	cp -R conf/www/. $(DESTDIR)$(SHARE)/www/
	cp -R conf/examples/. $(DESTDIR)$(SHARE)/examples/
	[ -e $(DESTDIR)/etc/tusknetd/tusknetd.conf ] || { \
	  sed 's|"\./conf/www"|"$(SHARE)/www"|' tusknetd.conf.example > $(DESTDIR)/etc/tusknetd/tusknetd.conf.new && \
	  { grep -q '"$(SHARE)/www"' $(DESTDIR)/etc/tusknetd/tusknetd.conf.new || \
	    { echo 'tusknetd.conf.example has no root "./conf/www" to point at $(SHARE)/www' >&2; exit 1; }; } && \
	  chmod 644 $(DESTDIR)/etc/tusknetd/tusknetd.conf.new && \
	  mv $(DESTDIR)/etc/tusknetd/tusknetd.conf.new $(DESTDIR)/etc/tusknetd/tusknetd.conf; }
	install -d $(DESTDIR)/etc/logrotate.d
	[ -e $(DESTDIR)/etc/logrotate.d/tusknetd ] || install -m 644 conf/logrotate/tusknetd $(DESTDIR)/etc/logrotate.d/tusknetd

# What plugin authors build against: the header and its pkg-config file.
install-dev:
	install -d $(DESTDIR)$(PREFIX)/include/tusknet $(DESTDIR)$(PREFIX)/share/pkgconfig
	install -m 644 include/tusknet/plugin.h $(DESTDIR)$(PREFIX)/include/tusknet/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e "s|@VERSION@|$$(sed -n 's/.*TN_VERSION \"\(.*\)\".*/\1/p' src/version.h)|" \
	  include/tusknet-plugin.pc.in > $(DESTDIR)$(PREFIX)/share/pkgconfig/tusknet-plugin.pc
	chmod 644 $(DESTDIR)$(PREFIX)/share/pkgconfig/tusknet-plugin.pc

# Man pages and the bash completion, installed by make install.
install-man:
	install -d $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 644 man/tusknetd.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 644 man/tusknetd.8 man/tusknetctl.8 $(DESTDIR)$(PREFIX)/share/man/man8/

install-completion:
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 644 completion/tusknetctl $(DESTDIR)$(PREFIX)/share/bash-completion/completions/

# The Debian package, built from this tree as a Debian developer would
# (dpkg-buildpackage -b; debian/rules builds in build/debian, not in
# build/release), then checked with lintian. dpkg-buildpackage writes its
# results next to the tree: they are moved into build/deb/. MAKEFLAGS is
# dropped so that e.g. SANITIZE=1 given here does not reach the package.
deb: deps-deb
	@rm -rf build/deb && mkdir -p build/deb
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b --jobs-try=2
	@set -e; v=$$(dpkg-parsechangelog -S Version); a=$$(dpkg-architecture -qDEB_HOST_ARCH); \
	  for f in $$(sed -n 's/ .*//p' debian/files) tusknetd_$${v}_$$a.changes; do mv ../$$f build/deb/; done
	debian/rules clean
	lintian --fail-on error --info build/deb/tusknetd_*.changes

deb-check: deb
	$(PYTHON) tests/tools/check_deb.py build/deb

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
