/*
 * journal.c: the UPDATE journal in the state directory: its header (the
 * plan and the digest of the old end), the two record slots used in turn,
 * their checksums, syncs and reading back for recovery.
 * Calls: plan.c, io.c, log.c.
 */
#include <sys/stat.h>
#include <sys/types.h>


#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <md5.h>
#include <xxhash.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

/* Alignment of the journal's parts. */
#define JOURNAL_ALIGN		4096

static const char journal_hdr_magic[8] = "pop3dJ1";
static const char journal_rec_magic[8] = "pop3dR1";

/* The journal header, followed by nruns struct jrun. */
struct jhdr {
	char		 magic[8];
	uint64_t	 dev, ino;
	uint64_t	 old;		/* the end of file the plan was made for */
	uint64_t	 final;		/* the size after the update */
	uint64_t	 nruns;
	uint64_t	 slotcap;	/* data octets a record slot holds */
	uint64_t	 tail_len;	/* octets before old under tail */
	unsigned char	 tail[MD5_DIGEST_LENGTH];
	unsigned char	 sum[MD5_DIGEST_LENGTH]; /* header (sum 0) + runs */
};

static uint64_t
round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int
journal_sync(struct upd *u)
{
	if (fsync(u->jfd) < 0) {
		logmsg(LOG_ERR, "%s: journal fsync: %s", u->mb->path,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/* Empties the journal: the commit point, or a plan given up before any
 * mailbox octet changed. */
int
journal_clear(struct upd *u)
{
	if (ftruncate(u->jfd, 0) < 0) {
		logmsg(LOG_ERR, "%s: journal ftruncate: %s", u->mb->path,
		    strerror(errno));
		return -1;
	}
	return journal_sync(u);
}

/*
 * The checksum of a record and its data: XXH3's 128 bits, not MD5, since
 * it covers every journalled octet (all of a 600 MB mailbox when the
 * oldest message is deleted) and only has to tell a torn or stale record
 * from a whole one.  MD5 took two thirds of such an UPDATE.
 */
static void
journal_rec_sum(const struct jrec *r, const unsigned char *data,
    unsigned char d[MD5_DIGEST_LENGTH])
{
	struct jrec z = *r;
	XXH3_state_t *st = XXH3_createState();
	XXH128_canonical_t c;

	if (st == NULL)
		fatalx("out of memory");
	memset(z.sum, 0, sizeof(z.sum));
	XXH3_128bits_reset(st);
	XXH3_128bits_update(st, &z, sizeof(z));
	XXH3_128bits_update(st, data, (size_t)r->len);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
	XXH3_freeState(st);
	memcpy(d, c.digest, MD5_DIGEST_LENGTH);
}

/*
 * Writes and syncs the next record: output [0, pos) is on disk, and
 * with len > 0 output [pos, pos + len) is u->buf.  The caller synced the
 * mailbox.  Returns 0 or -1.
 */
int
journal_write(struct upd *u, uint64_t pos, uint64_t len)
{
	struct jrec r;
	off_t at = u->slot0 + (off_t)(((u->seq + 1) & 1) * u->slotsz);

	memset(&r, 0, sizeof(r));
	memcpy(r.magic, journal_rec_magic, sizeof(r.magic));
	memcpy(r.hsum, u->hsum, sizeof(r.hsum));
	r.seq = u->seq + 1;
	r.pos = pos;
	r.len = len;
	r.gen = u->p.gen;
	if (r.gen > 0) {
		r.base = u->p.run[0].len;
		r.ext = u->p.run[1].src;
		r.old = u->p.old;
		r.tail_len = u->p.tail_len;
		memcpy(r.tail, u->p.tail, sizeof(r.tail));
	}
	journal_rec_sum(&r, u->buf, r.sum);
	if ((len > 0 && write_at(u->jfd, u->buf, (size_t)len,
	    at + (off_t)sizeof(r)) < 0) ||
	    write_at(u->jfd, (const unsigned char *)&r, sizeof(r), at) < 0) {
		logmsg(LOG_ERR, "%s: journal write: %s", u->mb->path,
		    strerror(errno));
		return -1;
	}
	if (journal_sync(u) < 0)
		return -1;
	u->seq++;
	u->records++;
	u->journaled += len;
	return 0;
}

/* The layout after the header: where the slots are. */
static void
journal_layout(struct upd *u)
{
	u->slot0 = (off_t)round_up(sizeof(struct jhdr) +
	    u->p.n * sizeof(struct jrun), JOURNAL_ALIGN);
	u->slotsz = round_up(sizeof(struct jrec) + u->slotcap, JOURNAL_ALIGN);
}

static void
journal_hdr_sum(const struct jhdr *h, const struct plan *p,
    unsigned char d[MD5_DIGEST_LENGTH])
{
	struct jhdr z = *h;
	MD5_CTX ctx;

	memset(z.sum, 0, sizeof(z.sum));
	MD5Init(&ctx);
	MD5Update(&ctx, (const unsigned char *)&z, sizeof(z));
	MD5Update(&ctx, (const unsigned char *)p->run, p->n * sizeof(*p->run));
	MD5Final(d, &ctx);
}

/* The digest of the octets [old - tail_len, old), which no write of the
 * plan touches: they tell an uncut file from a cut one. */
int
journal_tail(struct mailbox *mb, const struct plan *p, unsigned char *d)
{
	MD5_CTX ctx;
	ssize_t n;

	n = read_at(mb->fd, mb->buf, p->tail_len, (off_t)(p->old - p->tail_len));
	if (n < 0 || (uint64_t)n != p->tail_len)
		return -1;
	MD5Init(&ctx);
	MD5Update(&ctx, mb->buf, p->tail_len);
	MD5Final(d, &ctx);
	return 0;
}

/*
 * Writes the header and the runs, reserves both record slots and syncs,
 * before the first mailbox write.  Returns 0, or -1 with the journal
 * emptied again (or left alone if it was not empty to begin with).
 */
int
journal_begin(struct upd *u)
{
	struct mailbox *mb = u->mb;
	struct plan *p = &u->p;
	struct stat st;
	struct jhdr h;
	uint64_t moved = p->final - plan_start(p);
	int e;

	if (fstat(u->jfd, &st) < 0 || st.st_size != 0) {
		logmsg(LOG_ERR, "%s: the journal is not empty", mb->path);
		return -1;
	}
	u->slotcap = moved < MBOX_SLOT_MIN ? MBOX_SLOT_MIN :
	    moved > MBOX_UPDATE_CHUNK ? MBOX_UPDATE_CHUNK : moved;
	journal_layout(u);
	if (journal_tail(mb, p, p->tail) < 0) {
		logmsg(LOG_ERR, "%s: read: %s", mb->path, strerror(errno));
		return -1;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, journal_hdr_magic, sizeof(h.magic));
	h.dev = mailbox_file_dev(mb, mb->dev);
	h.ino = (uint64_t)mb->ino;
	h.old = p->old;
	h.final = p->final;
	h.nruns = p->n;
	h.slotcap = u->slotcap;
	h.tail_len = p->tail_len;
	memcpy(h.tail, p->tail, sizeof(h.tail));
	journal_hdr_sum(&h, p, h.sum);
	memcpy(u->hsum, h.sum, sizeof(u->hsum));
	if (write_at(u->jfd, (const unsigned char *)p->run,
	    p->n * sizeof(*p->run), (off_t)sizeof(h)) < 0 ||
	    write_at(u->jfd, (const unsigned char *)&h, sizeof(h), 0) < 0)
		e = errno;
	else
		e = posix_fallocate(u->jfd, 0, u->slot0 + 2 * (off_t)u->slotsz);
	if (e != 0) {
		logmsg(LOG_ERR, "%s: journal write: %s", mb->path, strerror(e));
		(void)journal_clear(u);
		return -1;
	}
	if (journal_sync(u) < 0) {
		(void)journal_clear(u);
		return -1;
	}
	return 0;
}

/* Reads and checks record slot k.  Returns 1 (valid, data in u->buf),
 * 0 (not a valid record of this journal). */
static int
journal_read(struct upd *u, int k, struct jrec *r)
{
	off_t at = u->slot0 + (off_t)((uint64_t)k * u->slotsz);
	unsigned char d[MD5_DIGEST_LENGTH];
	ssize_t n = read_at(u->jfd, (unsigned char *)r, sizeof(*r), at);

	if (n != (ssize_t)sizeof(*r) ||
	    memcmp(r->magic, journal_rec_magic, sizeof(r->magic)) != 0 ||
	    memcmp(r->hsum, u->hsum, sizeof(r->hsum)) != 0 ||
	    r->len > u->slotcap)
		return 0;
	n = read_at(u->jfd, u->buf, (size_t)r->len, at + (off_t)sizeof(*r));
	if (n < 0 || (uint64_t)n != r->len)
		return 0;
	journal_rec_sum(r, u->buf, d);
	return memcmp(d, r->sum, sizeof(d)) == 0;
}

/*
 * Reads the journal into u: header, plan, the newest valid record.
 * Returns NULL, or why the journal is not one to carry out.
 */
const char *
journal_load(struct upd *u, const struct stat *jst, const struct stat *st,
    struct jrec *rec, int *have)
{
	struct plan *p = &u->p;
	struct jhdr h;
	struct jrec r[2];
	int ok[2], k;
	unsigned char d[MD5_DIGEST_LENGTH];

	*have = 0;
	if (read_at(u->jfd, (unsigned char *)&h, sizeof(h), 0) !=
	    (ssize_t)sizeof(h) ||
	    memcmp(h.magic, journal_hdr_magic, sizeof(h.magic)) != 0 ||
	    h.nruns == 0 || h.nruns > ((uint64_t)jst->st_size - sizeof(h)) /
	    sizeof(struct jrun))
		return "torn header";
	p->n = p->alloc = (size_t)h.nruns;
	p->run = xreallocarray(NULL, p->n, sizeof(*p->run));
	if (read_at(u->jfd, (unsigned char *)p->run, p->n * sizeof(*p->run),
	    (off_t)sizeof(h)) != (ssize_t)(p->n * sizeof(*p->run)))
		return "torn header";
	journal_hdr_sum(&h, p, d);
	if (memcmp(d, h.sum, sizeof(d)) != 0)
		return "torn header";
	p->old = h.old;
	if (plan_seal(p) < 0 || p->final != h.final || h.final >= h.old ||
	    h.slotcap == 0 || h.slotcap > MBOX_UPDATE_CHUNK ||
	    h.tail_len == 0 || h.tail_len > MBOX_TAIL_MAX ||
	    h.tail_len > h.old - h.final)
		return "inconsistent header";
	if (h.dev != mailbox_file_dev(u->mb, st->st_dev) ||
	    h.ino != (uint64_t)st->st_ino)
		return "journal of another file (the mailbox was replaced)";
	memcpy(u->hsum, h.sum, sizeof(u->hsum));
	p->tail_len = h.tail_len;
	memcpy(p->tail, h.tail, sizeof(p->tail));
	u->slotcap = h.slotcap;
	journal_layout(u);
	u->redo = plan_start(p);
	ok[0] = journal_read(u, 0, &r[0]);
	ok[1] = journal_read(u, 1, &r[1]);
	if (!ok[0] && !ok[1])
		return NULL;
	k = !ok[0] ? 1 : !ok[1] ? 0 : r[1].seq > r[0].seq;
	if (!journal_read(u, k, rec))	/* its data into u->buf */
		return "record vanished";
	*have = 1;
	u->seq = rec->seq;
	if (rec->gen > 0) {
		if (plan_gen(p, rec->gen, rec->base, rec->ext, rec->old) < 0 ||
		    rec->tail_len == 0 || rec->tail_len > MBOX_TAIL_MAX ||
		    rec->tail_len > p->old - p->final)
			return "inconsistent record";
		p->tail_len = rec->tail_len;
		memcpy(p->tail, rec->tail, sizeof(p->tail));
	}
	if (rec->pos > p->final || rec->len > p->final - rec->pos)
		return "inconsistent record";
	u->redo = rec->pos + rec->len;
	return NULL;
}
