# pop3d: plain make, no autoconf.  -Werror only in `make check` and CI.
PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
EXDIR	?= $(PREFIX)/share/doc/pop3d/examples

CC	?= cc
WARN	 = -Wall -Wextra -Wformat=2 -Wshadow -Wconversion -Wsign-conversion \
	   -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
	   -Wcast-qual -Wwrite-strings -Wundef -Wvla
CFLAGS	?= -O2 -g
HARDEN	 = -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fPIE
ALLCFLAGS = -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(WARN) $(HARDEN) $(CPPFLAGS) $(CFLAGS) \
	    $(EXTRA_CFLAGS)
LDHARDEN = -pie -Wl,-z,relro,-z,now
# No -lssl: the TLS process alone loads OpenSSL (tlslib.c), with dlopen()
# (in libc since glibc 2.34).
LIBS	 = -lpam -lcrypt -llockfile -lmd -lxxhash

MBOBJS	 = mailbox.o scan.o uidl.o lock.o cache.o update.o journal.o plan.o
MBSRCS	 = $(MBOBJS:.o=.c)
SESSOBJS = session.o root.o priv.o state.o outcome.o tls.o tlslib.o conn.o
OBJS	 = pop3d.o $(SESSOBJS) auth.o $(MBOBJS) proxy.o io.o log.o
HDRS	 = pop3d.h params.h log.h io.h mailbox.h mailbox_int.h auth.h session.h outcome.h \
	   state.h priv.h root.h journal.h plan.h tls.h tlslib.h proxy.h conn.h

all: pop3d

pop3d: $(OBJS)
	$(CC) $(ALLCFLAGS) $(LDHARDEN) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

%.o: %.c $(HDRS)
	$(CC) $(ALLCFLAGS) -c -o $@ $<

# Unit tests link the modules without main() (pop3d.c guards it).
UNITOBJS = $(MBOBJS) proxy.o io.o log.o
tests/unit: tests/unit.c $(UNITOBJS) $(HDRS)
	$(CC) $(ALLCFLAGS) -I. $(LDHARDEN) $(LDFLAGS) -o $@ tests/unit.c $(UNITOBJS) $(LIBS)

# Replay builds of the fuzz targets: `make check` runs the corpus through
# them.  The session target links pop3d.c without main() and a fake login.
FUZZBINS = tests/fuzz_session tests/fuzz_mbox tests/fuzz_stls tests/fuzz_proxy
tests/pop3d-nomain.o: pop3d.c $(HDRS)
	$(CC) $(ALLCFLAGS) -DPOP3D_NO_MAIN -c -o $@ pop3d.c
tests/fuzz_session: tests/fuzz/session.c tests/fuzz/fake_login.h tests/fuzz/replay.h tests/pop3d-nomain.o \
		$(SESSOBJS) $(UNITOBJS)
	$(CC) $(ALLCFLAGS) -I. -DFUZZ_REPLAY $(LDFLAGS) -o $@ tests/fuzz/session.c \
		tests/pop3d-nomain.o $(SESSOBJS) $(UNITOBJS) $(LIBS)
# The STLS target fakes the TLS process: everything but tls.o, tlslib.o.
tests/fuzz_stls: tests/fuzz/stls.c tests/fuzz/fake_login.h tests/fuzz/replay.h \
		tests/pop3d-nomain.o $(SESSOBJS) $(UNITOBJS)
	$(CC) $(ALLCFLAGS) -I. -DFUZZ_REPLAY $(LDFLAGS) -o $@ tests/fuzz/stls.c \
		tests/pop3d-nomain.o $(filter-out tls.o tlslib.o,$(SESSOBJS)) $(UNITOBJS) $(LIBS)
tests/fuzz_mbox: tests/fuzz/mbox.c tests/fuzz/replay.h $(UNITOBJS)
	$(CC) $(ALLCFLAGS) -I. -DFUZZ_REPLAY $(LDFLAGS) -o $@ tests/fuzz/mbox.c \
		$(UNITOBJS) $(LIBS)
tests/fuzz_proxy: tests/fuzz/proxy.c tests/fuzz/replay.h proxy.o io.o log.o
	$(CC) $(ALLCFLAGS) -I. -DFUZZ_REPLAY $(LDFLAGS) -o $@ tests/fuzz/proxy.c \
		proxy.o io.o log.o $(LIBS)

# libFuzzer builds (clang), each target run FUZZTIME seconds on its
# corpus; new inputs land in tests/tmp/fuzz/new-*, crashes in tests/tmp/fuzz.
FUZZTIME ?= 60
FUZZCC	 = clang -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -I. \
	   -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
fuzz:
	@mkdir -p tests/tmp/fuzz/new-session tests/tmp/fuzz/new-mbox \
		tests/tmp/fuzz/new-stls \
		tests/tmp/fuzz/new-proxy
	$(FUZZCC) -DPOP3D_NO_MAIN -o tests/tmp/fuzz/session tests/fuzz/session.c \
		pop3d.c $(SESSOBJS:.o=.c) $(MBSRCS) proxy.c io.c \
		log.c $(LIBS)
	$(FUZZCC) -DPOP3D_NO_MAIN -o tests/tmp/fuzz/stls tests/fuzz/stls.c \
		pop3d.c $(filter-out tls.c tlslib.c,$(SESSOBJS:.o=.c)) $(MBSRCS) proxy.c io.c \
		log.c $(LIBS)
	$(FUZZCC) -o tests/tmp/fuzz/mbox tests/fuzz/mbox.c $(MBSRCS) io.c \
		log.c $(LIBS)
	$(FUZZCC) -o tests/tmp/fuzz/proxy tests/fuzz/proxy.c proxy.c io.c \
		log.c $(LIBS)
	tests/tmp/fuzz/session -max_total_time=$(FUZZTIME) -timeout=10 \
		-artifact_prefix=tests/tmp/fuzz/ tests/tmp/fuzz/new-session \
		tests/fuzz/corpus/session
	tests/tmp/fuzz/mbox -max_total_time=$(FUZZTIME) -timeout=10 \
		-artifact_prefix=tests/tmp/fuzz/ tests/tmp/fuzz/new-mbox \
		tests/fuzz/corpus/mbox
	tests/tmp/fuzz/stls -max_total_time=$(FUZZTIME) -timeout=10 \
		-artifact_prefix=tests/tmp/fuzz/ tests/tmp/fuzz/new-stls \
		tests/fuzz/corpus/stls
	tests/tmp/fuzz/proxy -max_total_time=$(FUZZTIME) -timeout=10 \
		-artifact_prefix=tests/tmp/fuzz/ tests/tmp/fuzz/new-proxy \
		tests/fuzz/corpus/proxy

clean:
	rm -f pop3d *.o tests/*.o tests/unit $(FUZZBINS) $(PLBINS)
	rm -rf tests/tmp asan

.PHONY: all clean fuzz

# ---- tests, sanitizers, demo, install (see README.md and tests/README) ----
# `make check` installs missing Debian packages (as root), builds with
# -Werror and runs tests/run.  SANITIZE=1 builds with ASan+UBSan; a stamp
# of the flags in tests/tmp forces a rebuild when they change.
PYTHON	 = /usr/bin/python3
SANFLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=all
CHECKFLAGS = -Werror $(if $(filter 1,$(SANITIZE)),$(SANFLAGS))
STAMP	 = tests/tmp/buildflags

check:
	@sh tests/deps.sh
	@mkdir -p tests/tmp; f='$(ALLCFLAGS) $(CHECKFLAGS)'; \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$f" ]; then \
		rm -f pop3d $(OBJS) tests/*.o tests/unit $(FUZZBINS) \
			$(PLBINS); \
		echo "$$f" > $(STAMP); fi
	$(MAKE) EXTRA_CFLAGS='$(CHECKFLAGS) $(EXTRA_CFLAGS)' pop3d tests/unit \
		$(FUZZBINS) tests/faultinject.so $(PLBINS)
	SANITIZE=$(SANITIZE) $(PYTHON) tests/run

# The same tests against an ASan+UBSan build in asan/, leaving the normal
# build alone.
asan:
	@sh tests/deps.sh
	rm -rf asan && mkdir -p asan/tests
	cp *.c *.h Makefile asan/ && cp tests/unit.c asan/tests/
	$(MAKE) -C asan EXTRA_CFLAGS='-Werror $(SANFLAGS) $(EXTRA_CFLAGS)' \
		pop3d tests/unit
	POP3D=$(CURDIR)/asan/pop3d UNIT=$(CURDIR)/asan/tests/unit SANITIZE=1 \
		$(PYTHON) tests/run

# Serves the seed's mailbox on 127.0.0.1:1110 until interrupted.
demo:
	@sh tests/deps.sh
	$(MAKE) pop3d
	sh tests/demo.sh

LAUNCHERS = $(wildcard xinetd.d/* systemd/*)
# Proxies in front and fail2ban (README, "More than one host").
PROXYEX	 = haproxy/haproxy.cfg nginx/nginx.conf fail2ban/filter.d/pop3d.conf \
	   fail2ban/jail.d/pop3d.conf

install: pop3d
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(EXDIR)/pam.d \
		$(DESTDIR)$(EXDIR)/xinetd.d $(DESTDIR)$(EXDIR)/systemd
	for f in $(PROXYEX); do install -D -m 0644 examples/$$f \
		$(DESTDIR)$(EXDIR)/$$f || exit 1; done
	install -m 0755 pop3d $(DESTDIR)$(SBINDIR)/pop3d
	if [ -f pop3d.8 ]; then install -d $(DESTDIR)$(MANDIR)/man8 && \
		install -m 0644 pop3d.8 $(DESTDIR)$(MANDIR)/man8/pop3d.8; fi
	install -m 0644 pam.d/pop3d $(DESTDIR)$(EXDIR)/pam.d/pop3d
	@# Every launcher file there is (pop3 and, with TLS, pop3s): the
	@# Debian package takes them from here into /etc/xinetd.d and the units.
	for f in $(LAUNCHERS); do \
		sed 's|/usr/local/sbin|$(SBINDIR)|g' $$f > $(DESTDIR)$(EXDIR)/$$f && \
		chmod 0644 $(DESTDIR)$(EXDIR)/$$f || exit 1; done
	@# /etc is never overwritten; the PAM file is needed for PAM logins.
	@if [ -e $(DESTDIR)/etc/pam.d/pop3d ]; then \
		echo "kept the existing $(DESTDIR)/etc/pam.d/pop3d"; \
	else install -d $(DESTDIR)/etc/pam.d && \
		install -m 0644 pam.d/pop3d $(DESTDIR)/etc/pam.d/pop3d; fi
	@# The pre-auth and TLS users and their chroot, only on the real
	@# system.
	@if [ -z "$(DESTDIR)" ]; then \
		for u in pop3d pop3d-tls; do \
			getent passwd $$u >/dev/null || useradd --system \
				--no-create-home --home-dir /nonexistent \
				--shell /usr/sbin/nologin $$u || exit 1; \
		done; \
		install -d -o root -g root -m 0755 /var/lib/pop3d && \
		install -d -o root -g root -m 0555 /var/lib/pop3d/empty; \
	fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/pop3d $(DESTDIR)$(MANDIR)/man8/pop3d.8
	rm -f $(DESTDIR)$(EXDIR)/pam.d/pop3d \
		$(addprefix $(DESTDIR)$(EXDIR)/,$(LAUNCHERS))
	for f in $(PROXYEX); do rm -f $(DESTDIR)$(EXDIR)/$$f; done
	-rmdir $(DESTDIR)$(EXDIR)/haproxy $(DESTDIR)$(EXDIR)/nginx \
		$(DESTDIR)$(EXDIR)/fail2ban/filter.d \
		$(DESTDIR)$(EXDIR)/fail2ban/jail.d $(DESTDIR)$(EXDIR)/fail2ban \
		2>/dev/null
	-rmdir $(DESTDIR)$(EXDIR)/pam.d $(DESTDIR)$(EXDIR)/xinetd.d \
		$(DESTDIR)$(EXDIR)/systemd $(DESTDIR)$(EXDIR) \
		$(DESTDIR)$(PREFIX)/share/doc/pop3d 2>/dev/null
	@if cmp -s pam.d/pop3d $(DESTDIR)/etc/pam.d/pop3d; then \
		rm -f $(DESTDIR)/etc/pam.d/pop3d; \
	elif [ -e $(DESTDIR)/etc/pam.d/pop3d ]; then \
		echo "kept $(DESTDIR)/etc/pam.d/pop3d: it was changed"; fi
	@echo "the pop3d and pop3d-tls users and /var/lib/pop3d/empty are left in place"

.PHONY: check asan demo install uninstall

# LD_PRELOAD shim of the crash tests (tests/faultinject.c): no sanitizer
# and no _FILE_OFFSET_BITS, since it defines both pwrite and pwrite64.
tests/faultinject.so: tests/faultinject.c
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CPPFLAGS) $(CFLAGS) \
		$(filter -Werror,$(EXTRA_CFLAGS)) -shared -fPIC $(LDFLAGS) \
		-o $@ tests/faultinject.c -ldl
clean: clean-faultinject
clean-faultinject:
	rm -f tests/faultinject.so
.PHONY: clean-faultinject

# The long forms of the fault, delivery, writer and load tests: `make check`
# with STRESS=1 in the environment of tests/run (suites read it).
stress:
	$(MAKE) check STRESS=1

# Every pop3d the suite starts under valgrind's memcheck (about 5 minutes
# here); the verdict is the case valgrind/all-sessions.
memcheck:
	$(MAKE) check VALGRIND=1

.PHONY: stress memcheck

# Deliberate bugs kept as tests/mutants/*.mut, one per promise: each is
# planted in a scratch copy and run against the cases that should catch
# it; the target fails when one survives.  As root; not part of CI.
mutants:
	$(PYTHON) tests/mutants/run

.PHONY: mutants

# Static analysis: cppcheck and clang-tidy over the daemon's sources; any
# finding fails.  Each suppressed check, with its reason:
#  - missingIncludeSystem: cppcheck does not need the system headers.
#  - clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling:
#    flags every memcpy/snprintf (C11 Annex K advice, not a finding).
#  - clang-analyzer-valist.Uninitialized: clang 14 false positive on every
#    va_start/vsnprintf pair (io.c out_printf, log.c).
#  - bugprone-suspicious-missing-comma: outcome.c outcomes[] joins two string
#    literals into one message on purpose.
#  - bugprone-not-null-terminated-result: auth.c copies the PAM user name
#    into a zeroed, length-bounded reply record, not a C string.
#  - bugprone-reserved-identifier, cert-dcl37-c/dcl51-cpp: _GNU_SOURCE.
SRCS	 = pop3d.c $(SESSOBJS:.o=.c) auth.c $(MBSRCS) proxy.c io.c log.c
analyze:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability \
		--inline-suppr --suppress=missingIncludeSystem -D__linux__ \
		-D__x86_64__ -D_GNU_SOURCE $(SRCS)
	clang-tidy --quiet --warnings-as-errors='*' \
		--checks='-*,clang-analyzer-*,bugprone-*,cert-*,-cert-err33-c,-bugprone-easily-swappable-parameters,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-bugprone-reserved-identifier,-cert-dcl37-c,-cert-dcl51-cpp,-clang-analyzer-valist.Uninitialized,-bugprone-suspicious-missing-comma,-bugprone-not-null-terminated-result' \
		$(SRCS) -- -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I.

.PHONY: analyze

# ---- benchmarks (README.md, "Performance"); as root, not part of check ----
# `make bench` times pop3d against popa3d, Dovecot and Mailutils on a 10k-
# message mbox; QUICK=1 does 1k only, SIZES="1k 10k 100k" all three;
# ANCHORS=1 first installs the other servers from Debian's packages.
SIZES	?= $(if $(filter 1,$(QUICK)),1k,10k)
bench: pop3d
	@if [ "$(ANCHORS)" = 1 ]; then sh bench/anchors; fi
	POP3D=$(CURDIR)/pop3d SIZES='$(SIZES)' $(PYTHON) bench/run

.PHONY: bench

# Power-cut replay of UPDATE and recovery (tests/powerloss.c): linked like
# tests/unit, with the mailbox's writes and syncs wrapped by the linker so
# that they are recorded.  tests/powerloss-4k is the same with 4 KiB chunks
# and record slots (tests/update-4k.o, tests/journal-4k.o), so that small mailboxes take many
# records.  `make check` runs the short form (tests/suites/powerloss.py),
# `make powerloss` the long one.
PLWRAP	 = -Wl,--wrap=pwrite64,--wrap=write,--wrap=ftruncate64 \
	   -Wl,--wrap=posix_fallocate64,--wrap=fallocate64,--wrap=fsync \
	   -Wl,--wrap=fdatasync,--wrap=rename,--wrap=renameat,--wrap=unlink \
	   -Wl,--wrap=unlinkat,--wrap=clock_gettime
PL4K	 = -DMBOX_UPDATE_CHUNK=4096U -DMBOX_SLOT_MIN=4096U
PLBINS	 = tests/powerloss tests/powerloss-4k
tests/powerloss: tests/powerloss.c $(UNITOBJS) $(HDRS)
	$(CC) $(ALLCFLAGS) -I. $(LDFLAGS) $(PLWRAP) -o $@ tests/powerloss.c \
		$(UNITOBJS) $(LIBS)
PL4KSRCS = update.c journal.c
PL4KOBJS = $(filter-out $(PL4KSRCS:.c=.o),$(UNITOBJS)) $(PL4KSRCS:%.c=tests/%-4k.o)
tests/%-4k.o: %.c $(HDRS)
	$(CC) $(ALLCFLAGS) $(PL4K) -c -o $@ $<
tests/powerloss-4k: tests/powerloss.c $(PL4KOBJS) $(HDRS)
	$(CC) $(ALLCFLAGS) $(PL4K) -I. $(LDFLAGS) $(PLWRAP) -o $@ \
		tests/powerloss.c $(PL4KOBJS) $(LIBS)

# The long form (-Werror build), ending with the line "powerloss: N crash
# states checked, N recovered, N lost"; a few minutes.
powerloss: powerloss-build
	sh tests/powerloss.sh --long

# The binaries as `make check` builds them (-Werror; the same stamp).
powerloss-build:
	@mkdir -p tests/tmp; f='$(ALLCFLAGS) $(CHECKFLAGS)'; \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$f" ]; then \
		rm -f pop3d $(OBJS) tests/*.o tests/unit $(FUZZBINS) \
			$(PLBINS); \
		echo "$$f" > $(STAMP); fi
	$(MAKE) EXTRA_CFLAGS='$(CHECKFLAGS) $(EXTRA_CFLAGS)' $(PLBINS)

# Breaks the commit order of a scratch copy of the mailbox sources in several ways
# and checks that the short form loses states with each (tests/tmp/mutants).
powerloss-mutants: powerloss-build
	PLSRCS='$(UNITOBJS:.o=.c)' $(PYTHON) tests/powerloss-mutants \
		'$(CC) $(ALLCFLAGS) $(CHECKFLAGS) $(PL4K) -I.' \
		'$(PLWRAP)' '$(LIBS)'

.PHONY: powerloss powerloss-build powerloss-mutants

# The Debian package (debian/): built from a scratch copy of the tree,
# lintian and blhc, then installed, served through its own launcher files,
# upgraded, removed, purged and reinstalled on this machine, which is left
# as it was (tests/deb-check).  As root; CI runs it after `make check`.
deb-check:
	@sh tests/deps.sh
	bash tests/deb-check

.PHONY: deb-check
