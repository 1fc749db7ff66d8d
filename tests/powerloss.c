/*
 * tests/powerloss.c: every state a power cut can leave of UPDATE and of
 * the recovery, rebuilt from a recorded trace and opened by the next
 * session.
 *
 * Record.  This program is linked with mailbox.o like tests/unit, with
 * pwrite/write/ftruncate/fallocate/fsync/fdatasync (and rename/unlink,
 * which nothing may call) wrapped by the linker (ld --wrap, see the
 * Makefile).  While a trace is being recorded, every operation on the
 * mailbox or the journal (told apart by device and inode) is logged in
 * order, with its offset and a copy of its data.  fsync and fdatasync are
 * never really called: the files here are scratch, durability is what
 * the replay models.
 *
 * Replay: the file-system model (README, "Power cuts").
 *  - Per file, every operation issued before the last fsync (or
 *    fdatasync) of that file that returned is on disk.  Nothing else
 *    orders anything: not the order of the calls within one file, not
 *    one file against the other.
 *  - Of the operations after that fsync, any subset reached the disk,
 *    applied in their order (a page always holds the latest data written
 *    to it); ftruncate and fallocate happened or not, as a whole.
 *  - One more of them, a write, may be torn: only some of its 512-octet
 *    sectors reached the disk (every combination for writes of up to 6
 *    sectors, 10 in the long form; for longer ones every prefix and
 *    every suffix cut, or a seeded sample of 12 (64) of each, and 4 (16)
 *    seeded sector masks or holes).  A sector is written whole or not at
 *    all.  Octets past the old end that no persisted write covers read as
 *    zeros (data=ordered: never stale blocks).
 * A crash state is a cut after the first k operations of a trace and one
 * such choice per file.  Where the choices of a cut are few (the product
 * of both files' choices up to a limit) all are built; where they are many
 * a seeded sample is, always with "none" and "all".  Equal states are
 * checked once.
 *
 * Check: the state is written to the files, then the next session's open
 * runs (mailbox_open with the journal: recovery under the locks, scan).
 * It must succeed and leave the journal empty, and the mailbox must be,
 * octet for octet, either the file before the UPDATE (the deletions all
 * back) or the file after it, with the mail delivered before the UPDATE
 * and after the crash where the scenario has it; and the open's listing
 * (count, sizes, UIDLs) must be that file's.  Mail an MDA appended without
 * an fsync may be missing or torn as long as nothing of pop3d's has
 * reached the disk (the file is then left exactly as the disk had it).
 *
 * Phases of a scenario (a mailbox shape, a deletion pattern, an optional
 * delivery between the scan and UPDATE, synced or not):
 *  update     the cuts of the UPDATE session's trace;
 *  recovery   states of "update" with a journal left, optionally with
 *             mail delivered after the crash, are recovered under the
 *             recorder, and the cuts of that recovery are checked; a
 *             few of those states with a journal left go through the
 *             same again (a cut during the recovery of a cut during a
 *             recovery);
 *  kill       UPDATE killed (kill -9: all it wrote is in the page cache,
 *             not on disk) after its kth operation, the next session's
 *             recovery recorded on that, and the cuts of both traces
 *             together from k on: a power cut during a recovery that
 *             read data not yet on disk.
 * Shapes: small (6 messages, 2.7 KB: one chunk), multi (16 messages,
 * 42 KB: 11 chunks with tests/powerloss-4k, records in both slots), big
 * (5 messages, 9.4 MB: 3 chunks of 4 MiB; tests/powerloss only).
 * Patterns: delete all, the oldest, every other, the newest, the largest.
 * Then the regression cases (run_regress): the states in which this tool
 * first found mail lost, each checked on its own.
 *
 * Usage: powerloss [--long | --quick] [--seed N] [--dir DIR] [-k SUBSTRING]
 *                  [-v] [--trace] [--max-lost N]
 * --quick is a smaller short form for the sanitizer build: fewer states
 * a cut, and with 4 MiB chunks only small-oldest and the regression cases.
 * -k runs the scenarios whose name contains SUBSTRING; --trace prints
 * the UPDATE traces (with -v the recoveries' too); --max-lost stops a
 * scenario after N lost states (tests/powerloss-mutants).
 * The scratch files go to DIR, else a new directory in /dev/shm (or
 * $TMPDIR, /tmp); they are removed at the end unless -v.
 * Prints "PASS powerloss/LABEL/NAME: counts" or "FAIL powerloss/LABEL/NAME:
 * why" per scenario, LABEL being chunk-4k or chunk-4m (the first lost
 * states are described, with the server's log), then "powerloss: N crash
 * states checked, N recovered, N lost"; exits 1 if anything was lost.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "io.h"
#include "mailbox.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

#define SECTOR		512
#define MAXLIST_BITS	16	/* pending ops whose subsets can be listed */

enum { F_MBOX, F_JOURNAL, NFILES };
enum { OP_WRITE, OP_TRUNC, OP_ALLOC, OP_SYNC };
enum { W_UPDATE, W_MDA, W_RECOVERY };

static const char *const file_name[NFILES] = { "mailbox", "journal" };
static const char *const op_name[] = { "write", "ftruncate", "fallocate",
    "fsync" };
static const char *const who_name[] = { "update", "mda", "recovery" };

struct op {
	int		 kind, file, who;
	uint64_t	 off, len;	/* TRUNC: off is the new size */
	unsigned char	*data;		/* WRITE: len octets */
};

struct trace {
	struct op	*op;
	size_t		 n, alloc;
	int		 owns;		/* frees the data of its ops */
};

struct img {
	unsigned char	*p;
	size_t		 len, cap;
};

/* ---- the recorder -------------------------------------------------- */

static struct trace *rec;		/* recording into, or NULL */
static int rec_who;
static dev_t fdev[NFILES];
static ino_t fino[NFILES];
static char unmodelled[256];		/* first call the model lacks */
static int clock_skew;			/* see __wrap_clock_gettime */

static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL) {
		fprintf(stderr, "powerloss: out of memory\n");
		exit(2);
	}
	return p;
}

static void *
xrealloc(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		exit(2);
	p = realloc(p, n * size != 0 ? n * size : 1);
	if (p == NULL) {
		fprintf(stderr, "powerloss: out of memory\n");
		exit(2);
	}
	return p;
}

/* Which file fd is while recording, or -1. */
static int
tracked(int fd)
{
	struct stat st;
	int f;

	if (rec == NULL || fd < 0 || fstat(fd, &st) < 0)
		return -1;
	for (f = 0; f < NFILES; f++)
		if (st.st_dev == fdev[f] && st.st_ino == fino[f])
			return f;
	return -1;
}

static void
trace_add(struct trace *t, int kind, int file, uint64_t off, uint64_t len,
    const void *data)
{
	struct op *o;

	if (t->n == t->alloc) {
		t->alloc = t->alloc ? 2 * t->alloc : 64;
		t->op = xrealloc(t->op, t->alloc, sizeof(*t->op));
	}
	o = &t->op[t->n++];
	o->kind = kind;
	o->file = file;
	o->who = rec_who;
	o->off = off;
	o->len = len;
	o->data = NULL;
	if (kind == OP_WRITE) {
		o->data = xcalloc(1, (size_t)len);
		memcpy(o->data, data, (size_t)len);
	}
}

static void
trace_free(struct trace *t)
{
	size_t i;

	if (t->owns)
		for (i = 0; i < t->n; i++)
			free(t->op[i].data);
	free(t->op);
	memset(t, 0, sizeof(*t));
}

static void
note_unmodelled(const char *call, const char *what)
{
	if (rec != NULL && unmodelled[0] == '\0')
		snprintf(unmodelled, sizeof(unmodelled), "%s(%s)", call, what);
}

ssize_t	__real_pwrite64(int, const void *, size_t, off_t);
ssize_t	__wrap_pwrite64(int, const void *, size_t, off_t);
ssize_t	__real_write(int, const void *, size_t);
ssize_t	__wrap_write(int, const void *, size_t);
int	__real_ftruncate64(int, off_t);
int	__wrap_ftruncate64(int, off_t);
int	__real_posix_fallocate64(int, off_t, off_t);
int	__wrap_posix_fallocate64(int, off_t, off_t);
int	__real_fallocate64(int, int, off_t, off_t);
int	__wrap_fallocate64(int, int, off_t, off_t);
int	__wrap_fsync(int);
int	__wrap_fdatasync(int);
int	__real_rename(const char *, const char *);
int	__wrap_rename(const char *, const char *);
int	__real_renameat(int, const char *, int, const char *);
int	__wrap_renameat(int, const char *, int, const char *);
int	__real_unlink(const char *);
int	__wrap_unlink(const char *);
int	__real_unlinkat(int, const char *, int);
int	__wrap_unlinkat(int, const char *, int);
int	__real_clock_gettime(clockid_t, struct timespec *);
int	__wrap_clock_gettime(clockid_t, struct timespec *);

ssize_t
__wrap_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	int f = tracked(fd);
	ssize_t r = __real_pwrite64(fd, buf, n, off);

	if (f >= 0 && r > 0)
		trace_add(rec, OP_WRITE, f, (uint64_t)off, (uint64_t)r, buf);
	return r;
}

ssize_t
__wrap_write(int fd, const void *buf, size_t n)
{
	int f = tracked(fd);
	off_t at = 0;
	ssize_t r;

	if (f >= 0) {
		struct stat st;
		int fl = fcntl(fd, F_GETFL);

		if (fl >= 0 && (fl & O_APPEND) && fstat(fd, &st) == 0)
			at = st.st_size;
		else
			at = lseek(fd, 0, SEEK_CUR);
	}
	r = __real_write(fd, buf, n);
	if (f >= 0 && r > 0)
		trace_add(rec, OP_WRITE, f, (uint64_t)at, (uint64_t)r, buf);
	return r;
}

int
__wrap_ftruncate64(int fd, off_t len)
{
	int f = tracked(fd);
	int r = __real_ftruncate64(fd, len);

	if (f >= 0 && r == 0)
		trace_add(rec, OP_TRUNC, f, (uint64_t)len, 0, NULL);
	return r;
}

int
__wrap_posix_fallocate64(int fd, off_t off, off_t len)
{
	int f = tracked(fd);
	int r = __real_posix_fallocate64(fd, off, len);

	if (f >= 0 && r == 0)
		trace_add(rec, OP_ALLOC, f, (uint64_t)off, (uint64_t)len, NULL);
	return r;
}

int
__wrap_fallocate64(int fd, int mode, off_t off, off_t len)
{
	int f = tracked(fd);
	int r = __real_fallocate64(fd, mode, off, len);

	if (f >= 0 && r == 0 && mode == 0)
		trace_add(rec, OP_ALLOC, f, (uint64_t)off, (uint64_t)len, NULL);
	else if (f >= 0 && r == 0)
		note_unmodelled("fallocate", "mode != 0");
	return r;
}

/* Not called: a sync point in the trace, no more. */
int
__wrap_fsync(int fd)
{
	int f = tracked(fd);

	if (f >= 0)
		trace_add(rec, OP_SYNC, f, 0, 0, NULL);
	return 0;
}

int
__wrap_fdatasync(int fd)
{
	return __wrap_fsync(fd);
}

/* Directory operations are outside the model: a trace with one fails. */
int
__wrap_rename(const char *a, const char *b)
{
	note_unmodelled("rename", a);
	return __real_rename(a, b);
}

int
__wrap_renameat(int d1, const char *a, int d2, const char *b)
{
	note_unmodelled("renameat", a);
	return __real_renameat(d1, a, d2, b);
}

int
__wrap_unlink(const char *a)
{
	note_unmodelled("unlink", a);
	return __real_unlink(a);
}

int
__wrap_unlinkat(int d, const char *a, int fl)
{
	note_unmodelled("unlinkat", a);
	return __real_unlinkat(d, a, fl);
}

/*
 * lock_settle() waits, after a scan, until the coarse clock is past
 * the file's mtime (at most a clock tick after a recovery wrote it).
 * That wait protects against later writers, of which there are none
 * here; skipping it makes the thousands of opens ~2 ms faster each.
 */
int
__wrap_clock_gettime(clockid_t c, struct timespec *ts)
{
	int r = __real_clock_gettime(c, ts);

	if (r == 0 && clock_skew && c == CLOCK_REALTIME_COARSE)
		ts->tv_sec += 10;
	return r;
}

/* ---- file images ---------------------------------------------------- */

static void
img_reserve(struct img *m, size_t len)
{
	if (len <= m->cap)
		return;
	m->cap = len + len / 4 + 4096;
	m->p = xrealloc(m->p, m->cap, 1);
}

static void
img_set(struct img *m, const void *p, size_t len)
{
	img_reserve(m, len);
	if (len > 0)
		memcpy(m->p, p, len);
	m->len = len;
}

static void
img_add(struct img *m, const void *p, size_t len)
{
	if (len == 0)
		return;
	img_reserve(m, m->len + len);
	memcpy(m->p + m->len, p, len);
	m->len += len;
}

static void
img_size(struct img *m, uint64_t size)
{
	img_reserve(m, (size_t)size);
	if (size > m->len)
		memset(m->p + m->len, 0, (size_t)size - m->len);
	m->len = (size_t)size;
}

static void
img_put(struct img *m, uint64_t off, const unsigned char *p, uint64_t len)
{
	if (len == 0)
		return;
	if (off + len > m->len)
		img_size(m, off + len);
	memcpy(m->p + off, p, (size_t)len);
}

/* Are the first n octets of a and b equal (either may be NULL if n is 0)? */
static int
same(const unsigned char *a, const unsigned char *b, size_t n)
{
	return n == 0 || memcmp(a, b, n) == 0;
}

static void
img_free(struct img *m)
{
	free(m->p);
	memset(m, 0, sizeof(*m));
}

static void
op_apply(struct img *m, const struct op *o)
{
	switch (o->kind) {
	case OP_WRITE:
		img_put(m, o->off, o->data, o->len);
		break;
	case OP_TRUNC:
		img_size(m, o->off);
		break;
	case OP_ALLOC:
		if (o->off + o->len > m->len)
			img_size(m, o->off + o->len);
		break;
	}
}

/* ---- torn writes ------------------------------------------------------ */

enum { T_PREFIX, T_SUFFIX, T_HOLE, T_MASK };

/* The part of a write that reached the disk: [off, a), [a, end), all but
 * [a, b), or the sectors in mask (relative to the write's first). */
struct tear {
	int		 kind;
	uint64_t	 a, b, mask;
};

struct tearset {
	struct tear	*t;
	unsigned	 n;
	int		 done;
};

static uint64_t
rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t
rnd_below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

static int long_form, quick, verbose, dump_traces;
static unsigned long max_lost;		/* per scenario; 0: no limit */
static const char *const label = MBOX_UPDATE_CHUNK <= 65536 ?
    "chunk-4k" : "chunk-4m";
static uint64_t seed = 1;

static void
tear_add(struct tearset *ts, int kind, uint64_t a, uint64_t b, uint64_t mask)
{
	ts->t = xrealloc(ts->t, ts->n + 1, sizeof(*ts->t));
	ts->t[ts->n].kind = kind;
	ts->t[ts->n].a = a;
	ts->t[ts->n].b = b;
	ts->t[ts->n].mask = mask;
	ts->n++;
}

/* The ways write o can be torn; the sample is seeded by its offset and
 * length, so the same write tears the same ways in every trace. */
static void
tears_make(struct tearset *ts, const struct op *o)
{
	uint64_t s0 = o->off / SECTOR, s1 = (o->off + o->len - 1) / SECTOR;
	uint64_t ns = s1 - s0 + 1, j, k, cuts = long_form ? 64 : 12;
	uint64_t rs = seed ^ (o->off * 0x100000001b3ULL) ^ (o->len << 20);
	unsigned masks = long_form ? 16 : 4;

	ts->done = 1;
	if (o->kind != OP_WRITE || ns < 2)
		return;
	if (ns <= (long_form ? 10U : 6U)) {
		for (j = 1; j + 1 < (1ULL << ns); j++)
			tear_add(ts, T_MASK, 0, 0, j);
		return;
	}
	/* interior boundaries: (s0 + j) * SECTOR for j in 1 .. ns - 1 */
	for (k = 0; k < (ns - 1 < cuts ? ns - 1 : cuts); k++) {
		j = ns - 1 <= cuts ? k + 1 : k == 0 ? 1 : k == 1 ? ns - 1 :
		    1 + rnd_below(&rs, ns - 1);
		tear_add(ts, T_PREFIX, (s0 + j) * SECTOR, 0, 0);
		tear_add(ts, T_SUFFIX, (s0 + j) * SECTOR, 0, 0);
	}
	for (k = 0; k < masks; k++) {
		if (ns <= 64) {
			uint64_t m = rnd(&rs) & ((ns == 64 ? 0 : 1ULL << ns) - 1);

			if (m != 0 && m != (ns == 64 ? ~0ULL : (1ULL << ns) - 1))
				tear_add(ts, T_MASK, 0, 0, m);
		} else {
			uint64_t a = 1 + rnd_below(&rs, ns - 2);
			uint64_t b = a + 1 + rnd_below(&rs, ns - 1 - a);

			tear_add(ts, T_HOLE, (s0 + a) * SECTOR, (s0 + b) * SECTOR,
			    0);
		}
	}
}

static void
tear_apply(struct img *m, const struct op *o, const struct tear *t)
{
	uint64_t end = o->off + o->len, s0 = o->off / SECTOR, j;

	switch (t->kind) {
	case T_PREFIX:
		img_put(m, o->off, o->data, t->a - o->off);
		break;
	case T_SUFFIX:
		img_put(m, t->a, o->data + (t->a - o->off), end - t->a);
		break;
	case T_HOLE:
		img_put(m, o->off, o->data, t->a - o->off);
		img_put(m, t->b, o->data + (t->b - o->off), end - t->b);
		break;
	case T_MASK:
		for (j = 0; j < 64; j++) {
			uint64_t a = (s0 + j) * SECTOR, b = a + SECTOR;

			if (!(t->mask & (1ULL << j)))
				continue;
			if (a < o->off)
				a = o->off;
			if (b > end)
				b = end;
			if (a < b)
				img_put(m, a, o->data + (a - o->off), b - a);
		}
		break;
	}
}

static void
tear_desc(char *buf, size_t size, const struct op *o, const struct tear *t)
{
	switch (t->kind) {
	case T_PREFIX:
		snprintf(buf, size, "only [%llu, %llu)",
		    (unsigned long long)o->off, (unsigned long long)t->a);
		break;
	case T_SUFFIX:
		snprintf(buf, size, "only [%llu, %llu)",
		    (unsigned long long)t->a,
		    (unsigned long long)(o->off + o->len));
		break;
	case T_HOLE:
		snprintf(buf, size, "all but [%llu, %llu)",
		    (unsigned long long)t->a, (unsigned long long)t->b);
		break;
	default:
		snprintf(buf, size, "sectors %#llx",
		    (unsigned long long)t->mask);
	}
}

/* ---- crash states --------------------------------------------------- */

/* One file at a cut: what is on disk for sure, what is pending. */
struct filecut {
	struct img	 dur;
	size_t		*pend;		/* trace indices */
	size_t		 np, palloc;
	uint64_t	*cum;		/* per subset mask: variants before it */
	uint64_t	 nvar;		/* 0: too many to list */
};

/* One choice for one file: sel[i] for pending op i (1: on disk), and
 * optionally one pending write torn. */
struct var {
	unsigned char	*sel;
	size_t		 cap;
	long		 torn;		/* index into pend, or -1 */
	unsigned	 tear;
};

struct run;

/* What a state must recover to. */
struct outcome {
	const char	*name;
	struct img	 data;
	unsigned	 count;
	uint64_t	*size;
	char		(*uidl)[POP3D_UIDL_MAX + 1];
};

struct expect {
	struct outcome	*o[2];
	const struct img *orig;		/* before, without unsynced mail */
	long		 mda_op;	/* the delivery's write, or -1 */
};

struct counts {
	unsigned long	 cuts, built, states, recovered, lost;
};

struct key {
	uint64_t	 a, b;
};

/* The states already checked in a scenario. */
struct seen {
	struct key	*k;
	size_t		 n, cap;
};

static int
seen_add(struct seen *s, struct key k)
{
	size_t i, mask;

	if (k.a == 0 && k.b == 0)
		k.a = 1;
	if (2 * (s->n + 1) > s->cap) {
		struct seen old = *s;

		s->cap = s->cap ? 2 * s->cap : 4096;
		s->k = xcalloc(s->cap, sizeof(*s->k));
		s->n = 0;
		for (i = 0; i < old.cap; i++)
			if (old.k[i].a != 0 || old.k[i].b != 0)
				(void)seen_add(s, old.k[i]);
		free(old.k);
	}
	mask = s->cap - 1;
	for (i = (size_t)k.a & mask; s->k[i].a != 0 || s->k[i].b != 0;
	    i = (i + 1) & mask)
		if (s->k[i].a == k.a && s->k[i].b == k.b)
			return 0;
	s->k[i] = k;
	s->n++;
	return 1;
}

/* The scratch files and the state of one scenario run. */
static char dir[PATH_MAX - 32], mbpath[PATH_MAX], jpath[PATH_MAX];
static int jfd = -1, logfd = -1;

struct run {
	const char	*name;
	struct seen	 seen;
	struct counts	 c;
	unsigned	 shown;		/* lost states described */
	struct img	 m, j;		/* the state being built */
	struct var	 v[NFILES];
	/* states with a journal left, for the recovery phase */
	struct img	*cand_m, *cand_j;
	unsigned	 ncand, maxcand;
	unsigned long	 candseen;
	uint64_t	 rs;
	uint64_t	 limit;		/* states a cut may have to list all */
	uint64_t	 samples;	/* else states drawn */
};

static void
fc_reset(struct filecut *fc, const struct img *init)
{
	img_set(&fc->dur, init->p, init->len);
	fc->np = 0;
}

static void
fc_push(struct filecut *fc, size_t i)
{
	if (fc->np == fc->palloc) {
		fc->palloc = fc->palloc ? 2 * fc->palloc : 64;
		fc->pend = xrealloc(fc->pend, fc->palloc, sizeof(*fc->pend));
	}
	fc->pend[fc->np++] = i;
}

static void
fc_free(struct filecut *fc)
{
	img_free(&fc->dur);
	free(fc->pend);
	free(fc->cum);
	memset(fc, 0, sizeof(*fc));
}

/* Counts the variants of fc (subsets of the pending ops, each with no
 * torn write or one of the pending writes it leaves out torn one way). */
static void
fc_count(struct filecut *fc, const struct tearset *ts)
{
	uint64_t mask, nmask, total = 0;
	size_t i;

	fc->nvar = 0;
	if (fc->np > MAXLIST_BITS)
		return;
	nmask = 1ULL << fc->np;
	fc->cum = xrealloc(fc->cum, (size_t)nmask + 1, sizeof(*fc->cum));
	for (mask = 0; mask < nmask; mask++) {
		fc->cum[mask] = total;
		total++;
		for (i = 0; i < fc->np; i++)
			if (!(mask & (1ULL << i)))
				total += ts[fc->pend[i]].n;
	}
	fc->cum[nmask] = total;
	fc->nvar = total;
}

static void
var_room(struct var *v, size_t n)
{
	if (n > v->cap) {
		v->cap = n + 64;
		v->sel = xrealloc(v->sel, v->cap, 1);
	}
}

/* Variant number x of fc. */
static void
var_decode(struct var *v, const struct filecut *fc, const struct tearset *ts,
    uint64_t x)
{
	uint64_t lo = 0, hi = 1ULL << fc->np, r;
	size_t i;

	while (hi - lo > 1) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (fc->cum[mid] <= x)
			lo = mid;
		else
			hi = mid;
	}
	var_room(v, fc->np);
	for (i = 0; i < fc->np; i++)
		v->sel[i] = (lo >> i) & 1;
	v->torn = -1;
	r = x - fc->cum[lo];
	if (r == 0)
		return;
	r--;
	for (i = 0; i < fc->np; i++) {
		unsigned n = v->sel[i] ? 0 : ts[fc->pend[i]].n;

		if (r < n) {
			v->torn = (long)i;
			v->tear = (unsigned)r;
			return;
		}
		r -= n;
	}
	abort();
}

/* A variant drawn at random; how = 0: none on disk, 1: all, 2: random. */
static void
var_random(struct var *v, const struct filecut *fc, const struct tearset *ts,
    int how, uint64_t *rs)
{
	size_t i, nout = 0;

	if (how == 2 && fc->nvar > 0) {
		var_decode(v, fc, ts, rnd_below(rs, fc->nvar));
		return;
	}
	var_room(v, fc->np);
	v->torn = -1;
	for (i = 0; i < fc->np; i++) {
		v->sel[i] = how == 2 ? (unsigned char)(rnd(rs) & 1) :
		    (unsigned char)how;
		nout += !v->sel[i] && ts[fc->pend[i]].n > 0;
	}
	if (how == 2 && nout > 0 && (rnd(rs) & 1)) {
		uint64_t pick = rnd_below(rs, nout);

		for (i = 0; i < fc->np; i++)
			if (!v->sel[i] && ts[fc->pend[i]].n > 0 && pick-- == 0) {
				v->torn = (long)i;
				v->tear = (unsigned)rnd_below(rs,
				    ts[fc->pend[i]].n);
				break;
			}
	}
}

static void
var_build(struct img *out, const struct filecut *fc, const struct var *v,
    const struct trace *t, const struct tearset *ts)
{
	size_t i;

	img_set(out, fc->dur.p, fc->dur.len);
	for (i = 0; i < fc->np; i++) {
		const struct op *o = &t->op[fc->pend[i]];

		if (v->sel[i])
			op_apply(out, o);
		else if (v->torn == (long)i)
			tear_apply(out, o, &ts[fc->pend[i]].t[v->tear]);
	}
}

static void
op_desc(char *buf, size_t size, const struct trace *t, size_t i)
{
	const struct op *o = &t->op[i];

	if (o->kind == OP_SYNC)
		snprintf(buf, size, "#%zu %s %s fsync", i + 1, who_name[o->who],
		    file_name[o->file]);
	else if (o->kind == OP_TRUNC)
		snprintf(buf, size, "#%zu %s %s ftruncate %llu", i + 1,
		    who_name[o->who], file_name[o->file],
		    (unsigned long long)o->off);
	else
		snprintf(buf, size, "#%zu %s %s %s [%llu, %llu)", i + 1,
		    who_name[o->who], file_name[o->file], op_name[o->kind],
		    (unsigned long long)o->off,
		    (unsigned long long)(o->off + o->len));
}

static void
trace_dump(const char *what, const struct trace *t)
{
	char d[160];
	size_t i;

	printf("    trace %s: %zu operations\n", what, t->n);
	for (i = 0; i < t->n; i++) {
		op_desc(d, sizeof(d), t, i);
		printf("      %s\n", d);
	}
}

/* ---- the check -------------------------------------------------------- */

static const struct mailbox_opts *
opts(void)
{
	static struct mailbox_opts o;

	memset(&o, 0, sizeof(o));
	o.owner = getuid();
	o.mode = UIDL_DIGEST;
	o.lock_timeout = 10;
	o.journal_fd = jfd;
	o.cache_fd = -1;
	return &o;
}

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("FAIL powerloss/%s/harness: ", label);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	exit(2);
}

/* Puts an image into a file in place (the same inode: the journal names
 * the mailbox by device and inode). */
static void
file_put(const char *path, const struct img *m)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	struct timespec ts[2] = { { 1296000000, 0 }, { 1296000000, 0 } };

	if (fd < 0 || ftruncate(fd, 0) < 0 ||
	    (m->len > 0 && pwrite(fd, m->p, m->len, 0) != (ssize_t)m->len) ||
	    futimens(fd, ts) < 0 || close(fd) < 0)
		die("%s: %s", path, strerror(errno));
}

static void
file_get(const char *path, struct img *m)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	img_size(m, (uint64_t)st.st_size);
	if (st.st_size > 0 && pread(fd, m->p, m->len, 0) != (ssize_t)m->len)
		die("%s: short read", path);
	close(fd);
}

static void
log_reset(void)
{
	if (ftruncate(logfd, 0) < 0 || lseek(logfd, 0, SEEK_SET) < 0)
		die("log: %s", strerror(errno));
}

/* The server's log since log_reset(), each line indented, to stdout. */
static void
log_show(void)
{
	char buf[4096];
	ssize_t n = pread(logfd, buf, sizeof(buf) - 1, 0);
	char *p, *e;

	if (n <= 0)
		return;
	buf[n] = '\0';
	for (p = buf; *p != '\0'; p = e + 1) {
		if ((e = strchr(p, '\n')) == NULL)
			e = p + strlen(p) - 1;
		printf("        # %.*s\n", (int)(e - p + (*e != '\n')), p);
	}
}

/* Opens the mailbox as it is (an empty journal) and takes its listing. */
static void
outcome_init(struct outcome *oc, const char *name, const struct img *data)
{
	struct img empty = { NULL, 0, 0 };
	struct mailbox *mb;
	unsigned i;
	int r;

	oc->name = name;
	img_set(&oc->data, data->p, data->len);
	file_put(mbpath, data);
	file_put(jpath, &empty);
	if ((r = mailbox_open(&mb, mbpath, opts())) != MB_OK)
		die("outcome %s: open returned %d", name, r);
	oc->count = mailbox_count(mb);
	oc->size = xcalloc(oc->count, sizeof(*oc->size));
	oc->uidl = xcalloc(oc->count, sizeof(*oc->uidl));
	for (i = 0; i < oc->count; i++) {
		oc->size[i] = mailbox_size(mb, i + 1);
		mailbox_uidl(mb, i + 1, oc->uidl[i]);
	}
	mailbox_close(mb);
}

static void
outcome_free(struct outcome *oc)
{
	img_free(&oc->data);
	free(oc->size);
	free(oc->uidl);
	memset(oc, 0, sizeof(*oc));
}

/* Does the open's listing match the outcome?  NULL or why not. */
static const char *
listing_check(struct mailbox *mb, const struct outcome *oc)
{
	static char why[160];
	char u[POP3D_UIDL_MAX + 1];
	unsigned i;

	if (mailbox_count(mb) != oc->count) {
		snprintf(why, sizeof(why), "%u messages listed, %s has %u",
		    mailbox_count(mb), oc->name, oc->count);
		return why;
	}
	for (i = 0; i < oc->count; i++) {
		mailbox_uidl(mb, i + 1, u);
		if (mailbox_size(mb, i + 1) != oc->size[i] ||
		    strcmp(u, oc->uidl[i]) != 0) {
			snprintf(why, sizeof(why), "message %u: size %llu "
			    "UIDL %s, want %llu %s", i + 1,
			    (unsigned long long)mailbox_size(mb, i + 1), u,
			    (unsigned long long)oc->size[i], oc->uidl[i]);
			return why;
		}
	}
	return NULL;
}

/* Runs the next session's open on the state in r->m, r->j.  strict: all
 * mail delivered is on disk.  Returns NULL (recovered) or why not. */
static const char *
state_check(struct run *r, const struct expect *e, int strict)
{
	static char why[256];
	static struct img got;
	struct mailbox *mb;
	struct stat st;
	const char *w = NULL;
	int k, res;

	file_put(mbpath, &r->m);
	file_put(jpath, &r->j);
	log_reset();
	if ((res = mailbox_open(&mb, mbpath, opts())) != MB_OK) {
		snprintf(why, sizeof(why), "the open returned %d", res);
		return why;
	}
	if (fstat(jfd, &st) < 0 || st.st_size != 0) {
		snprintf(why, sizeof(why), "journal of %lld octets left",
		    (long long)st.st_size);
		mailbox_close(mb);
		return why;
	}
	file_get(mbpath, &got);
	for (k = 0; k < 2; k++)
		if (got.len == e->o[k]->data.len &&
		    same(got.p, e->o[k]->data.p, got.len))
			break;
	if (k < 2)
		w = listing_check(mb, e->o[k]);
	else if (!strict && got.len == r->m.len &&
	    same(got.p, r->m.p, got.len) && got.len >= e->orig->len &&
	    same(got.p, e->orig->p, e->orig->len))
		w = NULL;	/* untouched; the unsynced mail as the disk has it */
	else {
		size_t i, n = got.len < e->o[1]->data.len ? got.len :
		    e->o[1]->data.len;

		for (i = 0; i < n && got.p[i] == e->o[1]->data.p[i]; i++)
			;
		snprintf(why, sizeof(why), "the mailbox (%zu octets) is "
		    "neither %s (%zu) nor %s (%zu); from %s it differs at "
		    "octet %zu", got.len, e->o[0]->name, e->o[0]->data.len,
		    e->o[1]->name, e->o[1]->data.len, e->o[1]->name, i);
		w = why;
	}
	mailbox_close(mb);
	return w;
}

/* ---- enumeration ------------------------------------------------------ */

static void
state_describe(const struct run *r, const struct trace *t, size_t k,
    const struct filecut *fc, const struct tearset *ts)
{
	char d[160], td[80] = "";
	size_t i;
	int f;

	if (k == 0)
		printf("      cut before the first operation\n");
	else {
		op_desc(d, sizeof(d), t, k - 1);
		printf("      cut after %s (of %zu)\n", d, t->n);
	}
	for (f = 0; f < NFILES; f++) {
		printf("      %s: %zu octets on disk for sure, %zu pending%s\n",
		    file_name[f], fc[f].dur.len, fc[f].np,
		    fc[f].np ? ":" : "");
		for (i = 0; i < fc[f].np; i++) {
			const struct var *v = &r->v[f];

			op_desc(d, sizeof(d), t, fc[f].pend[i]);
			if (v->torn == (long)i)
				tear_desc(td, sizeof(td), &t->op[fc[f].pend[i]],
				    &ts[fc[f].pend[i]].t[v->tear]);
			printf("        %s: %s%s\n", d, v->sel[i] ? "on disk" :
			    v->torn == (long)i ? "torn, " : "lost",
			    v->torn == (long)i ? td : "");
		}
	}
}

/* Keeps a state with a journal for the recovery phase (reservoir). */
static void
cand_offer(struct run *r)
{
	uint64_t x;

	if (r->maxcand == 0 || r->j.len == 0)
		return;
	x = r->candseen < r->maxcand ? r->candseen :
	    rnd_below(&r->rs, r->candseen + 1);
	r->candseen++;
	if (x >= r->maxcand)
		return;
	if (x >= r->ncand)
		x = r->ncand++;
	img_set(&r->cand_m[x], r->m.p, r->m.len);
	img_set(&r->cand_j[x], r->j.p, r->j.len);
}

/* Builds the state of the current variants, checks it unless seen. */
static void
state_try(struct run *r, const struct expect *e, const struct trace *t,
    size_t k, const struct filecut *fc, const struct tearset *ts, int strict)
{
	XXH128_hash_t hm, hj;
	struct key key;
	const char *why;

	var_build(&r->m, &fc[F_MBOX], &r->v[F_MBOX], t, ts);
	var_build(&r->j, &fc[F_JOURNAL], &r->v[F_JOURNAL], t, ts);
	r->c.built++;
	hm = XXH3_128bits(r->m.p, r->m.len);
	hj = XXH3_128bits_withSeed(r->j.p, r->j.len, (uint64_t)strict + 1);
	key.a = hm.low64 ^ (hj.high64 * 0x9e3779b97f4a7c15ULL);
	key.b = hm.high64 ^ hj.low64 ^ (uint64_t)r->j.len;
	if (!seen_add(&r->seen, key))
		return;
	r->c.states++;
	if ((why = state_check(r, e, strict)) == NULL) {
		r->c.recovered++;
		cand_offer(r);
		return;
	}
	r->c.lost++;
	if (r->shown++ < 3) {
		printf("    LOST %s: %s\n", r->name, why);
		state_describe(r, t, k, fc, ts);
		log_show();
	}
}

/* Is the delivery (if any) on disk at cut k: issued, and not pending? */
static int
delivered(const struct expect *e, size_t k, const struct filecut *fc)
{
	size_t i;

	if (e->mda_op < 0)
		return 1;
	if (k <= (size_t)e->mda_op)
		return 0;
	for (i = 0; i < fc[F_MBOX].np; i++)
		if (fc[F_MBOX].pend[i] == (size_t)e->mda_op)
			return 0;
	return 1;
}

/*
 * Checks the cuts k0..k1 of trace t, whose files start as init[] (on
 * disk).  Until the delivery at e->mda_op is on disk (an fsync of the
 * mailbox after it returned) the checks are lenient about that mail.
 */
static void
enumerate(struct run *r, const struct expect *e, const struct trace *t,
    const struct img *init, size_t k0, size_t k1)
{
	struct filecut fc[NFILES];
	struct tearset *ts = xcalloc(t->n, sizeof(*ts));
	uint64_t limit = r->limit, samples = r->samples;
	size_t i, k;
	int f;

	memset(fc, 0, sizeof(fc));
	for (f = 0; f < NFILES; f++)
		fc_reset(&fc[f], &init[f]);
	for (i = 0; i < t->n; i++)
		tears_make(&ts[i], &t->op[i]);
	for (k = 0; k <= k1 && k <= t->n; k++) {
		int strict;

		if (k > 0) {	/* operation k - 1 is issued */
			const struct op *o = &t->op[k - 1];
			struct filecut *c = &fc[o->file];

			if (o->kind == OP_SYNC) {
				for (i = 0; i < c->np; i++)
					op_apply(&c->dur, &t->op[c->pend[i]]);
				c->np = 0;
			} else
				fc_push(c, k - 1);
		}
		if (k < k0)
			continue;
		if (max_lost > 0 && r->c.lost >= max_lost)
			break;
		strict = delivered(e, k, fc);
		r->c.cuts++;
		for (f = 0; f < NFILES; f++)
			fc_count(&fc[f], ts);
		if (fc[0].nvar > 0 && fc[1].nvar > 0 &&
		    fc[0].nvar <= limit / fc[1].nvar) {
			uint64_t a, b;

			for (a = 0; a < fc[0].nvar; a++)
				for (b = 0; b < fc[1].nvar; b++) {
					var_decode(&r->v[0], &fc[0], ts, a);
					var_decode(&r->v[1], &fc[1], ts, b);
					state_try(r, e, t, k, fc, ts, strict);
				}
			continue;
		}
		for (i = 0; i < samples; i++) {
			for (f = 0; f < NFILES; f++)
				var_random(&r->v[f], &fc[f], ts,
				    i < 4 ? (int)((i >> f) & 1) : 2, &r->rs);
			state_try(r, e, t, k, fc, ts, strict);
		}
	}
	for (f = 0; f < NFILES; f++)
		fc_free(&fc[f]);
	for (i = 0; i < t->n; i++)
		free(ts[i].t);
	free(ts);
}

/* ---- scenarios -------------------------------------------------------- */

struct shape {
	const char	*name;
	const unsigned	*size;
	unsigned	 n;
};

static const unsigned small_sizes[] = { 420, 130, 900, 260, 610, 350 };
static const unsigned multi_sizes[] = { 300, 5000, 120, 9000, 800, 3300,
    150, 2500, 7000, 400, 6000, 1000, 200, 4500, 700, 1500 };
static const unsigned big_sizes[] = { 2000, 4718592, 3000, 4718592, 1500 };

static const struct shape shapes[] = {
	{ "small", small_sizes, sizeof(small_sizes) / sizeof(small_sizes[0]) },
	{ "multi", multi_sizes, sizeof(multi_sizes) / sizeof(multi_sizes[0]) },
	{ "big", big_sizes, sizeof(big_sizes) / sizeof(big_sizes[0]) },
};

enum { D_ALL, D_OLDEST, D_EVERY_OTHER, D_NEWEST, D_LARGEST, NPATTERNS };
static const char *const pattern_name[] = { "all", "oldest", "every-other",
    "newest", "largest" };

enum { M_NONE, M_SYNCED, M_UNSYNCED };
static const char *const mda_name[] = { "", "+mail-synced",
    "+mail-unsynced" };

#define MAIL_DURING "\nFrom dave@example.org Sat Feb  5 10:00:00 2011\n" \
	"Received: from relay.example.org by mx; Sat, 5 Feb 2011 10:00:00\n" \
	"Subject: delivered between the scan and UPDATE\n\nduring\n"
#define MAIL_AFTER "\nFrom carol@example.org Fri Feb  4 09:00:00 2011\n" \
	"Received: from relay.example.org by mx; Fri, 4 Feb 2011 09:00:00\n" \
	"Subject: delivered after the crash\n\nafter\n"

struct scenario {
	const struct shape *shape;
	int		 pattern, mda;
	unsigned	 recov;		/* recovery phase: states taken */
	unsigned	 recov2;	/* second round: states taken */
	int		 kills;		/* kill phase: 0 none, 1 sample, 2 all */
	unsigned	 limit, samples; /* per cut; 0: the form's */
};

static int
deleted(const struct scenario *s, unsigned i)	/* i: 1-based */
{
	switch (s->pattern) {
	case D_ALL:
		return 1;
	case D_OLDEST:
		return i == 1;
	case D_EVERY_OTHER:
		return i % 2 == 1;
	case D_NEWEST:
		return i == s->shape->n;
	default: {	/* the largest: direct writes, then records */
		unsigned k, big = 1;

		for (k = 2; k <= s->shape->n; k++)
			if (s->shape->size[k - 1] > s->shape->size[big - 1])
				big = k;
		return i == big;
	}
	}
}

/* Message i (1-based) of about size octets, with the blank line that
 * separates it from the next unless it is the last. */
static void
message(struct img *m, unsigned i, unsigned size, int last)
{
	char line[200];
	unsigned k;
	int n;

	n = snprintf(line, sizeof(line), "From %s@example.org %s\n"
	    "Received: from relay%u.example.org by mx; Wed, 24 Jan 2011 "
	    "10:49:%02u +0000\nSubject: message %u\nMessage-ID: <%u@"
	    "powerloss.test>\n\n", i % 2 ? "alice" : "bob",
	    i % 2 ? "Wed Jan 24 10:49:06 2011" : "Thu Feb  3 08:00:00 2011",
	    i, i % 60, i, i);
	img_add(m, line, (size_t)n);
	for (k = 0; (unsigned)n < size; k++) {
		int l = snprintf(line, sizeof(line), "message %u line %u: the "
		    "quick brown fox jumps over the lazy dog\n", i, k);

		img_add(m, line, (size_t)l);
		n += l;
	}
	if (!last)
		img_add(m, "\n", 1);
}

static void
session_update(const struct scenario *s, struct trace *t)
{
	struct mailbox *mb;
	unsigned i;
	int r;

	rec = t;
	rec_who = W_UPDATE;
	if ((r = mailbox_open(&mb, mbpath, opts())) != MB_OK)
		die("update session: open returned %d", r);
	for (i = 1; i <= mailbox_count(mb); i++)
		if (deleted(s, i))
			mailbox_delete(mb, i);
	if (s->mda != M_NONE) {
		struct stat st;
		int fd = open(mbpath, O_WRONLY | O_CLOEXEC);

		rec_who = W_MDA;
		if (fd < 0 || fstat(fd, &st) < 0 ||
		    pwrite(fd, MAIL_DURING, strlen(MAIL_DURING), st.st_size) !=
		    (ssize_t)strlen(MAIL_DURING) ||
		    (s->mda == M_SYNCED && fsync(fd) < 0) || close(fd) < 0)
			die("delivery: %s", strerror(errno));
		rec_who = W_UPDATE;
	}
	if ((r = mailbox_update(mb)) != MB_OK)
		die("update returned %d", r);
	mailbox_close(mb);
	rec = NULL;
}

/* The next session's open, recorded, on the files as they are.
 * Returns mailbox_open's result. */
static int
session_recover(struct trace *t)
{
	struct mailbox *mb;
	int r;

	rec = t;
	rec_who = W_RECOVERY;
	log_reset();
	r = mailbox_open(&mb, mbpath, opts());
	rec = NULL;
	if (r == MB_OK)
		mailbox_close(mb);
	return r;
}

struct totals {
	unsigned long	 states, recovered, lost, scenarios, failed;
};

static struct totals total;

/* A scenario made ready: its files, its recorded UPDATE, its outcomes. */
struct prep {
	char		 name[128];
	struct img	 orig, before, after, init[NFILES];
	struct outcome	 oc[4];
	struct expect	 e;		/* for the UPDATE's trace */
	struct expect	 er;		/* for a recovery's own trace */
	struct expect	 en;		/* the same, new mail after the crash */
	struct trace	 t;
	unsigned	 nkept;
};

static void
prep_make(struct prep *pp, const struct scenario *s, const char *name)
{
	struct img got = { NULL, 0, 0 }, msg = { NULL, 0, 0 };
	struct img a = { NULL, 0, 0 }, b = { NULL, 0, 0 };
	unsigned i;
	size_t k;

	memset(pp, 0, sizeof(*pp));
	snprintf(pp->name, sizeof(pp->name), "%s", name);
	pp->t.owns = 1;
	unmodelled[0] = '\0';

	/* the files before, and what UPDATE must make of them */
	for (i = 1; i <= s->shape->n; i++) {
		msg.len = 0;
		message(&msg, i, s->shape->size[i - 1], i == s->shape->n);
		img_add(&pp->orig, msg.p, msg.len);
		if (!deleted(s, i)) {
			img_add(&pp->after, msg.p, msg.len);
			pp->nkept++;
		}
	}
	img_free(&msg);
	img_set(&pp->before, pp->orig.p, pp->orig.len);
	if (s->mda != M_NONE) {
		const char *m = MAIL_DURING;

		img_add(&pp->before, m, strlen(m));
		/* with nothing before it, UPDATE drops its blank line */
		if (pp->nkept == 0)
			m++;
		img_add(&pp->after, m, strlen(m));
	}

	/* the UPDATE session, recorded */
	img_set(&pp->init[F_MBOX], pp->orig.p, pp->orig.len);
	file_put(mbpath, &pp->init[F_MBOX]);
	file_put(jpath, &pp->init[F_JOURNAL]);
	session_update(s, &pp->t);
	file_get(mbpath, &got);
	if (got.len != pp->after.len ||
	    !same(got.p, pp->after.p, got.len))
		die("%s: the UPDATE without a crash made %zu octets, want %zu",
		    name, got.len, pp->after.len);
	img_free(&got);
	if (dump_traces)
		trace_dump(name, &pp->t);

	outcome_init(&pp->oc[0], "the file before UPDATE", &pp->before);
	outcome_init(&pp->oc[1], "the file after UPDATE", &pp->after);
	for (i = 1, k = 0; i <= s->shape->n; i++)
		if (!deleted(s, i)) {
			if (k >= pp->oc[1].count ||
			    strcmp(pp->oc[1].uidl[k], pp->oc[0].uidl[i - 1]) != 0)
				die("%s: UPDATE changed the UIDL of message %u",
				    name, i);
			k++;
		}
	/* mail delivered after the crash; not after "all": it would start
	 * the file with its blank line (no mbox, crash or not), and that
	 * UPDATE is a cut without a journal anyway */
	if (pp->after.len > 0) {
		img_set(&a, pp->before.p, pp->before.len);
		img_add(&a, MAIL_AFTER, strlen(MAIL_AFTER));
		img_set(&b, pp->after.p, pp->after.len);
		img_add(&b, MAIL_AFTER, strlen(MAIL_AFTER));
		outcome_init(&pp->oc[2], "the file before UPDATE, then the "
		    "new mail", &a);
		outcome_init(&pp->oc[3], "the file after UPDATE, then the "
		    "new mail", &b);
		img_free(&a);
		img_free(&b);
	}

	pp->e.o[0] = &pp->oc[0];
	pp->e.o[1] = &pp->oc[1];
	pp->e.orig = &pp->orig;
	pp->e.mda_op = -1;
	for (k = 0; k < pp->t.n; k++)
		if (pp->t.op[k].who == W_MDA && pp->t.op[k].kind == OP_WRITE)
			pp->e.mda_op = (long)k;
	pp->er = pp->e;
	pp->er.mda_op = -1;	/* a recovery's trace has no delivery */
	pp->en = pp->er;
	pp->en.o[0] = &pp->oc[2];
	pp->en.o[1] = &pp->oc[3];
}

static void
prep_free(struct prep *pp)
{
	int i;

	for (i = 0; i < 4; i++)
		outcome_free(&pp->oc[i]);
	for (i = 0; i < NFILES; i++)
		img_free(&pp->init[i]);
	img_free(&pp->orig);
	img_free(&pp->before);
	img_free(&pp->after);
	trace_free(&pp->t);
}

/*
 * UPDATE killed after its first k operations: the recovery is recorded on
 * the page cache's view (page[]), and c becomes both traces together (c
 * borrows the ops' data; t2 owns the recovery's).
 */
static int
kill_trace(const struct prep *pp, size_t k, struct img *page,
    struct trace *t2, struct trace *c)
{
	size_t j;
	int r;

	for (j = 0; j < NFILES; j++)
		img_set(&page[j], pp->init[j].p, pp->init[j].len);
	for (j = 0; j < k; j++)
		op_apply(&page[pp->t.op[j].file], &pp->t.op[j]);
	file_put(mbpath, &page[F_MBOX]);
	file_put(jpath, &page[F_JOURNAL]);
	memset(t2, 0, sizeof(*t2));
	t2->owns = 1;
	r = session_recover(t2);
	memset(c, 0, sizeof(*c));
	c->n = c->alloc = k + t2->n;
	c->op = xcalloc(c->n, sizeof(*c->op));
	if (k > 0)
		memcpy(c->op, pp->t.op, k * sizeof(*c->op));
	if (t2->n > 0)
		memcpy(c->op + k, t2->op, t2->n * sizeof(*c->op));
	return r;
}

/* A recovery that failed on the state just written: a lost state. */
static void
recovery_failed(struct run *r, int res, const char *where)
{
	r->c.states++;
	r->c.lost++;
	if (r->shown++ < 3) {
		printf("    LOST %s: the recovery %s returned %d\n", r->name,
		    where, res);
		log_show();
	}
}

static void
run_init(struct run *r, const struct scenario *s, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->rs = seed ^ XXH3_64bits(name, strlen(name));
	r->limit = s->limit ? s->limit : long_form ? 16384 : 512;
	r->samples = s->samples ? s->samples : long_form ? 2048 : 48;
}

static void
run_free(struct run *r)
{
	unsigned i;
	int f;

	for (i = 0; i < r->ncand; i++) {
		img_free(&r->cand_m[i]);
		img_free(&r->cand_j[i]);
	}
	free(r->cand_m);
	free(r->cand_j);
	free(r->seen.k);
	for (f = 0; f < NFILES; f++)
		free(r->v[f].sel);
	img_free(&r->m);
	img_free(&r->j);
}

/* Adds a scenario's result to the totals and prints its line. */
static void
report(const char *name, const struct run *r, const char *detail)
{
	int bad = unmodelled[0] != '\0' || r->c.lost > 0;

	if (unmodelled[0] != '\0')
		printf("FAIL powerloss/%s/%s: the trace has %s, which the "
		    "model does not cover\n", label, name, unmodelled);
	else if (r->c.lost > 0)
		printf("FAIL powerloss/%s/%s: %lu of %lu crash states lost "
		    "mail (%s)\n", label, name, r->c.lost, r->c.states, detail);
	else
		printf("PASS powerloss/%s/%s: %s; %lu recovered\n", label, name,
		    detail, r->c.recovered);
	fflush(stdout);
	total.states += r->c.states;
	total.recovered += r->c.recovered;
	total.lost += r->c.lost;
	total.scenarios++;
	total.failed += (unsigned long)bad;
}

/*
 * One recovery of a crash state (m, j), with the new mail appended (and
 * synced) first if newmail: recorded, then every cut of it checked.
 * Returns 1 if it ran.
 */
static unsigned
recovery_round(struct run *r, const struct prep *pp, const struct img *m,
    const struct img *j, int newmail, struct img *page, unsigned long *st,
    unsigned long *lost)
{
	struct trace t2 = { NULL, 0, 0, 1 };
	unsigned long st0 = r->c.states, lost0 = r->c.lost;
	int res;

	if (newmail && pp->after.len == 0)
		return 0;	/* see prep_make() */
	img_set(&page[F_MBOX], m->p, m->len);
	img_set(&page[F_JOURNAL], j->p, j->len);
	if (newmail)
		img_add(&page[F_MBOX], MAIL_AFTER, strlen(MAIL_AFTER));
	file_put(mbpath, &page[F_MBOX]);
	file_put(jpath, &page[F_JOURNAL]);
	if ((res = session_recover(&t2)) != MB_OK)
		recovery_failed(r, res, "of a recovered state");
	else {
		if (dump_traces && verbose)
			trace_dump("recovery", &t2);
		enumerate(r, newmail ? &pp->en : &pp->er, &t2, page, 0, t2.n);
	}
	*st += r->c.states - st0;
	*lost += r->c.lost - lost0;
	trace_free(&t2);
	return 1;
}

static void
run_scenario(const struct scenario *s, const char *filter)
{
	char name[128], detail[256];
	struct img page[NFILES];
	struct img *um, *uj;
	struct prep pp;
	struct run r;
	unsigned i, un, nrec = 0, nkill = 0;
	unsigned long ust, ulost, rst = 0, rlost = 0, kst = 0, klost = 0;
	size_t k;
	int res;

	snprintf(name, sizeof(name), "%s-%s%s", s->shape->name,
	    pattern_name[s->pattern], mda_name[s->mda]);
	if (filter != NULL && strstr(name, filter) == NULL)
		return;
	memset(page, 0, sizeof(page));
	prep_make(&pp, s, name);
	run_init(&r, s, name);
	clock_skew = 1;

	/* update: every cut of the UPDATE session */
	r.maxcand = s->recov;
	r.cand_m = xcalloc(s->recov, sizeof(*r.cand_m));
	r.cand_j = xcalloc(s->recov, sizeof(*r.cand_j));
	enumerate(&r, &pp.e, &pp.t, pp.init, 0, pp.t.n);
	ust = r.c.states;
	ulost = r.c.lost;
	r.shown = 0;
	r.maxcand = 0;

	/* recovery: a power cut during the recovery of a power cut, with
	 * and without mail delivered (and synced) in between; states of
	 * those recoveries (without the new mail) with a journal left are
	 * kept for a second round: a cut during the recovery of a cut
	 * during a recovery */
	um = r.cand_m;
	uj = r.cand_j;
	un = r.ncand;
	r.cand_m = xcalloc(s->recov2, sizeof(*r.cand_m));
	r.cand_j = xcalloc(s->recov2, sizeof(*r.cand_j));
	r.ncand = 0;
	r.candseen = 0;
	for (i = 0; i < 2 * un; i++) {
		r.maxcand = i % 2 ? 0 : s->recov2;
		nrec += recovery_round(&r, &pp, &um[i / 2], &uj[i / 2], i % 2,
		    page, &rst, &rlost);
	}
	r.maxcand = 0;
	for (i = 0; i < r.ncand; i++)
		nrec += recovery_round(&r, &pp, &r.cand_m[i], &r.cand_j[i], 0,
		    page, &rst, &rlost);
	for (i = 0; i < un; i++) {
		img_free(&um[i]);
		img_free(&uj[i]);
	}
	free(um);
	free(uj);

	/* kill: UPDATE killed after operation k, the recovery run on the
	 * page cache, a power cut anywhere after the kill */
	r.shown = 0;
	for (k = 1; s->kills && k <= pp.t.n; k++) {
		struct trace t2, c;
		unsigned long st0 = r.c.states, lost0 = r.c.lost;

		if (s->kills == 1 && pp.t.op[k - 1].file != F_JOURNAL &&
		    (k == pp.t.n || pp.t.op[k].kind != OP_SYNC))
			continue;	/* the sample: around journal ops, syncs */
		if ((res = kill_trace(&pp, k, page, &t2, &c)) != MB_OK)
			recovery_failed(&r, res, "after the kill");
		else
			enumerate(&r, &pp.e, &c, pp.init, k, c.n);
		kst += r.c.states - st0;
		klost += r.c.lost - lost0;
		nkill++;
		free(c.op);
		trace_free(&t2);
	}
	clock_skew = 0;

	if (r.c.lost > 0)
		snprintf(detail, sizeof(detail), "update %lu of %lu, recovery "
		    "%lu of %lu, kill %lu of %lu", ulost, ust, rlost, rst,
		    klost, kst);
	else
		snprintf(detail, sizeof(detail), "%zu ops; update %lu states "
		    "at %zu cuts; recovery of %u states %lu; kill at %u points "
		    "%lu", pp.t.n, ust, pp.t.n + 1, nrec, rst, nkill, kst);
	report(name, &r, detail);
	for (i = 0; i < NFILES; i++)
		img_free(&page[i]);
	run_free(&r);
	prep_free(&pp);
}

/* ---- regression cases -------------------------------------------------- */

/*
 * The states in which the enumeration first lost mail, each built on its
 * own so that no change of the sampling can drop them.
 *
 * kill-then-cut: UPDATE killed after writing a data record, before its
 * fsync; the recovery read that record from the page cache and rewrote
 * the chunk; the power cut kept that mailbox write and lost the record.
 * The older plan then redid from octets the write had destroyed.  Fixed:
 * the recovery syncs the journal and the mailbox before it acts.
 *
 * unsynced-append: an MDA appended mail without fsync between the scan
 * and UPDATE; the power cut kept the journal (synced) and lost the append,
 * and the recovery took the shorter file for one already cut and left old
 * octets after the final end.  Fixed: UPDATE syncs the mailbox before it
 * writes the journal.
 */
static void
regress_state(struct run *r, const struct expect *e, const struct trace *t,
    const struct img *init, size_t k, int how_m, int how_j)
{
	struct filecut fc[NFILES];
	struct tearset *ts = xcalloc(t->n, sizeof(*ts));
	size_t i;
	int f;

	memset(fc, 0, sizeof(fc));
	for (f = 0; f < NFILES; f++)
		fc_reset(&fc[f], &init[f]);
	for (i = 0; i < k; i++) {
		struct filecut *c = &fc[t->op[i].file];

		if (t->op[i].kind == OP_SYNC) {
			size_t j;

			for (j = 0; j < c->np; j++)
				op_apply(&c->dur, &t->op[c->pend[j]]);
			c->np = 0;
		} else
			fc_push(c, i);
	}
	var_random(&r->v[F_MBOX], &fc[F_MBOX], ts, how_m, &r->rs);
	var_random(&r->v[F_JOURNAL], &fc[F_JOURNAL], ts, how_j, &r->rs);
	r->c.cuts++;
	state_try(r, e, t, k, fc, ts, delivered(e, k, fc));
	for (f = 0; f < NFILES; f++)
		fc_free(&fc[f]);
	free(ts);
}

/* The index of the fsync that follows the first journal record's writes
 * (the first journal write after the journal's fallocate), or t->n. */
static size_t
first_record_sync(const struct trace *t)
{
	size_t k;
	int alloc = 0, rec_seen = 0;

	for (k = 0; k < t->n; k++) {
		const struct op *o = &t->op[k];

		if (o->file != F_JOURNAL)
			continue;
		if (o->kind == OP_ALLOC)
			alloc = 1;
		else if (alloc && o->kind == OP_WRITE)
			rec_seen = 1;
		else if (rec_seen && o->kind == OP_SYNC)
			return k;
	}
	return t->n;
}

static void
regress_fail(const char *name, const char *why)
{
	printf("FAIL powerloss/%s/%s: %s\n", label, name, why);
	total.scenarios++;
	total.failed++;
}

static void
run_regress(const char *filter)
{
	struct scenario s = { .shape = &shapes[0], .pattern = D_OLDEST };
	struct img page[NFILES];
	struct trace t2, c;
	struct prep pp;
	struct run r;
	const char *name = "regress-kill-then-cut";
	size_t k, j;
	int res;

	memset(page, 0, sizeof(page));
	if (filter == NULL || strstr(name, filter) != NULL) {
		prep_make(&pp, &s, name);
		run_init(&r, &s, name);
		clock_skew = 1;
		/* the kill: after the first data record's writes, before
		 * its fsync */
		k = first_record_sync(&pp.t);
		if (k == pp.t.n)
			regress_fail(name, "no journal record in the trace");
		else if ((res = kill_trace(&pp, k, page, &t2, &c)) != MB_OK) {
			recovery_failed(&r, res, "after the kill");
			report(name, &r, "the recovery after the kill failed");
		} else {
			/* the cut: after the recovery's first mailbox write,
			 * which is on disk; the journal's pending writes are
			 * not */
			for (j = k; j < c.n; j++)
				if (c.op[j].file == F_MBOX &&
				    c.op[j].kind == OP_WRITE)
					break;
			if (j == c.n)
				regress_fail(name, "the recovery wrote nothing");
			else {
				regress_state(&r, &pp.e, &c, pp.init, j + 1, 1,
				    0);
				report(name, &r, "a data record not yet synced, "
				    "a kill, the recovery's write on disk, the "
				    "record not");
			}
		}
		if (k < pp.t.n) {
			free(c.op);
			trace_free(&t2);
		}
		clock_skew = 0;
		for (j = 0; j < NFILES; j++)
			img_free(&page[j]);
		run_free(&r);
		prep_free(&pp);
	}

	name = "regress-unsynced-append";
	s.mda = M_UNSYNCED;
	if (filter == NULL || strstr(name, filter) != NULL) {
		prep_make(&pp, &s, name);
		run_init(&r, &s, name);
		clock_skew = 1;
		/* the cut: after the first data record's fsync; the append
		 * (if still pending) lost, the journal whole */
		k = first_record_sync(&pp.t);
		if (k == pp.t.n)
			regress_fail(name, "no journal record in the trace");
		else {
			regress_state(&r, &pp.e, &pp.t, pp.init, k + 1, 0, 1);
			report(name, &r, "the journal synced, the MDA's append "
			    "not");
		}
		clock_skew = 0;
		run_free(&r);
		prep_free(&pp);
	}
}

/* ---- main ------------------------------------------------------------- */

/* How much of each phase a scenario runs, by form and size. */
static void
scenario_set(struct scenario *s, const struct shape *shp, int pattern,
    int mda, int big)
{
	memset(s, 0, sizeof(*s));
	s->shape = shp;
	s->pattern = pattern;
	s->mda = mda;
	s->recov = long_form ? 24 : quick ? 2 : 4;
	s->recov2 = long_form ? 8 : quick ? 0 : 2;
	s->kills = long_form ? 2 : 1;
	if (quick) {
		s->limit = 64;
		s->samples = 12;
	}
	if (mda == M_UNSYNCED)		/* lenient states: no second rounds */
		s->recov = s->recov2 = 0;
	if (big) {
		s->recov = long_form ? 2 : 0;
		s->recov2 = long_form ? 1 : 0;
		s->kills = long_form;
		s->limit = long_form ? 64 : 8;
		s->samples = long_form ? 24 : 6;
	}
}

static void
setup(const char *where)
{
	struct stat st;
	int fd, f;

	if (where != NULL) {
		if (snprintf(dir, sizeof(dir), "%s", where) >= (int)sizeof(dir))
			die("--dir too long");
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			die("%s: %s", dir, strerror(errno));
	} else {
		/* tmpfs if there is one: on ext4 with discard each ftruncate
		 * of the scratch files costs a millisecond */
		const char *t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
		    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

		snprintf(dir, sizeof(dir), "%s/pop3d-powerloss-XXXXXX", t);
		if (mkdtemp(dir) == NULL)
			die("mkdtemp: %s", strerror(errno));
	}
	snprintf(mbpath, sizeof(mbpath), "%s/mbox", dir);
	snprintf(jpath, sizeof(jpath), "%s/journal", dir);
	for (f = 0; f < NFILES; f++) {
		const char *p = f == F_MBOX ? mbpath : jpath;

		if ((fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
		    fstat(fd, &st) < 0)
			die("%s: %s", p, strerror(errno));
		fdev[f] = st.st_dev;
		fino[f] = st.st_ino;
		if (f == F_JOURNAL)
			jfd = fd;
		else
			close(fd);
	}
	/* the server logs to stderr, which becomes a buffer shown with each
	 * lost state; sanitizer reports still go to the real stderr */
#ifdef __SANITIZE_ADDRESS__
	__sanitizer_set_report_fd((void *)(intptr_t)dup(STDERR_FILENO));
#endif
	if ((logfd = memfd_create("log", 0)) < 0 ||
	    dup2(logfd, STDERR_FILENO) < 0)
		die("memfd: %s", strerror(errno));
	log_init(1);
}

/* The scratch files hold only the last state checked: removed (with the
 * directory, if this run made it) unless -v. */
static void
cleanup(int made)
{
	if (verbose) {
		printf("(scratch files kept in %s)\n", dir);
		return;
	}
	unlink(mbpath);
	unlink(jpath);
	if (made)
		rmdir(dir);
}

int
main(int argc, char **argv)
{
	const char *where = NULL, *filter = NULL;
	int i, small = MBOX_UPDATE_CHUNK <= 65536;
	size_t sh, p;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--long") == 0)
			long_form = 1;
		else if (strcmp(argv[i], "--quick") == 0)
			quick = 1;
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			where = argv[++i];
		else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc)
			filter = argv[++i];
		else if (strcmp(argv[i], "-v") == 0)
			verbose = 1;
		else if (strcmp(argv[i], "--trace") == 0)
			dump_traces = 1;
		else if (strcmp(argv[i], "--max-lost") == 0 && i + 1 < argc)
			max_lost = strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: %s [--long | --quick] [--seed N] "
			    "[--dir DIR] [-k SUBSTRING] [-v] [--trace] "
			    "[--max-lost N]\n",
			    argv[0]);
			return 2;
		}
	}
	setup(where);
	printf("INFO powerloss: chunk %u octets, smallest record slot %u, "
	    "%s form, seed %llu\n", (unsigned)MBOX_UPDATE_CHUNK,
	    (unsigned)MBOX_SLOT_MIN, long_form ? "long" : quick ? "quick" :
	    "short",
	    (unsigned long long)seed);
	for (sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++) {
		const struct shape *shp = &shapes[sh];
		int big = sh == 2;

		/* 4 KiB chunks: small and multi; 4 MiB chunks: small and
		 * big (~40 ms a state: fewer of them; in the short form only
		 * "oldest", which journals every chunk) */
		if (small ? big : sh == 1 || (quick && big))
			continue;
		for (p = 0; p < NPATTERNS; p++) {
			struct scenario s;

			if ((big && !long_form && p != D_OLDEST) ||
			    (quick && !small && p != D_OLDEST))
				continue;
			scenario_set(&s, shp, (int)p, M_NONE, big);
			run_scenario(&s, filter);
		}
		for (p = D_OLDEST; p <= D_EVERY_OTHER && !big &&
		    !(quick && !small); p++) {
			struct scenario s1, s2;

			scenario_set(&s1, shp, (int)p, M_SYNCED, big);
			scenario_set(&s2, shp, (int)p, M_UNSYNCED, big);
			run_scenario(&s1, filter);
			run_scenario(&s2, filter);
		}
	}
	run_regress(filter);
	printf("powerloss: %lu crash states checked, %lu recovered, %lu lost\n",
	    total.states, total.recovered, total.lost);
	cleanup(where == NULL);
	return total.lost > 0 || total.failed > 0 ? 1 : 0;
}
