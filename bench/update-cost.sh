#!/bin/sh
# bench/update-cost.sh: what the crash-safe UPDATE costs.
#
#   bench/update-cost.sh [MESSAGES [RUNS]]      (defaults 10000 and 5)
#
# Generates a deterministic maildrop of MESSAGES messages of 1-12 KB
# (10000: about 65 MB) and times mailbox_update() alone -- a small C driver
# linked against the mailbox objects calls mailbox_open, mailbox_delete and
# mailbox_update -- for "delete all", "delete the oldest message" and
# "delete half", with the journal (what pop3d does) and with journal_fd -1
# (plain in-place compaction without crash safety, the same chunked copy).
# Warm cache: the maildrop is copied from a cached master before each run.
# Prints the median of RUNS runs per cell, and the journal's records and
# octets.  Work files live in a temporary directory under bench/tmp (on
# disk, so fsync costs what it costs there) and are removed at the end.
set -eu
cd "$(dirname "$0")/.."
N=${1:-10000}
RUNS=${2:-5}
# the objects of tests/unit (UNITOBJS in the Makefile)
OBJS="mailbox.o scan.o uidl.o lock.o cache.o update.o journal.o plan.o io.o log.o"
make -s $OBJS
mkdir -p bench/tmp
W=$(mktemp -d bench/tmp/update-cost.XXXXXX)
trap 'rm -rf "$W"' EXIT INT TERM

cat > "$W/driver.c" <<'EOF'
/* Times one UPDATE: driver MBOX JOURNAL|- all|oldest|half */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "mailbox.h"

int
main(int argc, char **argv)
{
	struct mailbox_opts o;
	struct mailbox *mb;
	struct timespec t0, t1;
	unsigned i, n;
	int r;

	if (argc != 4)
		return 2;
	log_init(1);		/* the update: line goes to stderr */
	memset(&o, 0, sizeof(o));
	o.owner = getuid();
	o.mode = UIDL_DIGEST;
	o.lock_timeout = 5;
	o.max_messages = 1U << 24;
	o.journal_fd = strcmp(argv[2], "-") == 0 ? -1 :
	    open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
	o.cache_fd = -1;
	if (mailbox_open(&mb, argv[1], &o) != MB_OK)
		return 3;
	n = mailbox_count(mb);
	for (i = 1; i <= n; i++)
		if (strcmp(argv[3], "all") == 0 ||
		    (strcmp(argv[3], "oldest") == 0 && i == 1) ||
		    (strcmp(argv[3], "half") == 0 && i % 2 == 1))
			mailbox_delete(mb, i);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = mailbox_update(mb);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	mailbox_close(mb);
	printf("%.4f\n", (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return r == MB_OK ? 0 : 4;
}
EOF
cc -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -O2 -I. -o "$W/driver" \
	"$W/driver.c" $OBJS -lpam -lcrypt -llockfile -lmd -lxxhash

/usr/bin/python3 - "$N" "$W/master" <<'EOF'
import random, sys
n, out = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(1)
line = b"the quick brown fox jumps over the lazy dog, message %d line %d\n"
with open(out, "wb") as f:
    for i in range(1, n + 1):
        f.write(b"From sender%d@example.org Wed Jan 24 10:49:06 2011\n"
                b"Received: from relay.example.org by mx; id %d\n"
                b"Subject: message %d\nMessage-ID: <%d@bench>\n\n" % (i, i, i, i))
        size, k = rnd.randint(1000, 12000), 0
        while size > 0:
            l = line % (i, k)
            f.write(l)
            size -= len(l)
            k += 1
        if i < n:
            f.write(b"\n")
EOF
SIZE=$(stat -c %s "$W/master")
cat "$W/master" > /dev/null

# median of RUNS timings; JOURNALED gets the last run's journal summary
cell() {	# pattern, journal path or -
	t=""
	for r in $(seq "$RUNS"); do
		cp "$W/master" "$W/mbox"
		sync "$W/mbox"
		t="$t $("$W/driver" "$W/mbox" "$2" "$1" 2>"$W/log")"
	done
	echo $t | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

printf 'UPDATE cost, %d messages, %d octets, median of %d, warm cache\n' \
	"$N" "$SIZE" "$RUNS"
printf '%-26s %12s %12s %8s   %s\n' "pattern" "plain (s)" "journal (s)" "ratio" "journal use"
for p in all oldest half; do
	a=$(cell "$p" -)
	b=$(cell "$p" "$W/journal")
	j=$(sed -n 's/.*update: .*octets, \([0-9]* records\), \([0-9]*\) octets journaled.*/\1, \2 octets journaled/p' "$W/log")
	printf '%-26s %12s %12s %8s   %s\n' "delete $p" "$a" "$b" \
		"$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (a > 0) ? (b / a) : 0 }')" \
		"${j:-no journal (only a cut)}"
done
