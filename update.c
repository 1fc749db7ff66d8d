/*
 * update.c: UPDATE's write phase, the in-place compaction (the
 * crash-safety argument is the comment below), and the recovery of an
 * interrupted UPDATE at the next open.
 * Calls: journal.c (records), plan.c (what moves where), io.c, log.c.
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

/* ---- UPDATE --------------------------------------------------------- */

/*
 * UPDATE compacts the file in place, and survives being killed at any
 * point, or a power cut, through a journal in the state directory that
 * pop3d opened before the privilege drop (mb->journal_fd; the spool
 * directory may not be writable by the user).
 *
 * The plan: the runs of the old file that are kept (the hidden
 * pseudo-message, each kept message with its From_ line and the separator
 * after it, mail appended since the scan up to the end of file seen now),
 * in file order; run i goes to dst[i], the sum of the lengths before it.
 * src(x) is the old offset of output octet x: src(x) >= x, and the shift
 * src(x) - x never decreases along the file.
 *
 * The journal: a header (the mailbox's device and inode, its old size
 * "old", the final size, the runs, a digest of the last octets before
 * old) with an MD5 over it, written and synced before the first mailbox
 * write, and after an fsync of the mailbox (mail appended without one
 * must not vanish under a synced plan); then two record slots used in
 * turn, each record with a sequence number and a checksum, so that a
 * torn record leaves the other one whole.
 * A record says "output [0, pos) is on disk", and a data record also
 * "output [pos, pos + len) is these octets"; the redo point D is then pos
 * (pos + len).  Without a record, D is the first octet that moves.
 *
 * Output goes out in chunks of at most MBOX_UPDATE_CHUNK octets.  Writing
 * [x, x + c) destroys old octets [x, x + c), and a redo from D reads old
 * octets from src(D) on.  So a chunk is written straight away while
 * x + c <= src(D).  Otherwise the mailbox is synced and a record D = x is
 * written and synced first; and if the chunk still overlaps its own
 * source (x + c > src(x)), that record carries the chunk.  Deleting the
 * second half writes no record, deleting half of all messages few;
 * deleting the oldest small message journals nearly every moved octet.
 * Before the cut, the mailbox is synced and a record D = final written
 * (old octets past final are no longer needed), then ftruncate, fsync,
 * and the journal is cut to 0 and synced: an empty journal is the commit.
 *
 * Without a journal fd (the unit tests, --list-uidl, the benchmark's
 * baseline) the same chunks are written with no record: plain in-place
 * compaction, which a crash can leave half done.
 */

static void
update_init(struct upd *u, struct mailbox *mb, int jfd)
{
	memset(u, 0, sizeof(*u));
	u->mb = mb;
	u->jfd = jfd;
	u->buf = xmalloc(MBOX_UPDATE_CHUNK);
}

static void
update_free(struct upd *u)
{
	free(u->p.run);
	free(u->p.dst);
	free(u->buf);
}

/* Reads output [x, x + c) from the old octets into u->buf. */
static int
update_fill(struct upd *u, uint64_t x, uint64_t c)
{
	const struct plan *p = &u->p;
	size_t i = plan_index(p, x);
	uint64_t done = 0;

	while (done < c) {
		uint64_t off = x + done - p->dst[i];
		uint64_t n = p->run[i].len - off;
		ssize_t got;

		if (n > c - done)
			n = c - done;
		got = read_at(u->mb->fd, u->buf + done, (size_t)n,
		    (off_t)(p->run[i].src + off));
		if (got < 0 || (uint64_t)got != n) {
			logmsg(LOG_ERR, "%s: read: %s", u->mb->path,
			    got < 0 ? strerror(errno) : "file shrank");
			return -1;
		}
		done += n;
		i++;
	}
	return 0;
}

/* Overwrites len octets of the mailbox at dst.  Every change UPDATE makes
 * to existing octets of the file goes through here. */
static int
update_overwrite(struct upd *u, uint64_t dst, const unsigned char *buf,
    uint64_t len)
{
	u->written = u->dirty = 1;
	if (write_at(u->mb->fd, buf, (size_t)len, (off_t)dst) < 0) {
		logmsg(LOG_ERR, "%s: write: %s", u->mb->path, strerror(errno));
		return -1;
	}
	return 0;
}

static int
update_sync(struct upd *u)
{
	if (!u->dirty)
		return 0;
	u->dirty = 0;
	if (fsync(u->mb->fd) < 0) {
		logmsg(LOG_ERR, "%s: fsync: %s", u->mb->path, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Makes the mailbox as read so far durable, before a plan or a redo is
 * built on it: mail an MDA appended without an fsync, or what a killed
 * UPDATE or recovery left in the page cache, could otherwise vanish in a
 * power cut while a synced journal describes it (and recovery would take
 * a file shorter than the plan's end for one already cut).
 */
static int
update_sync_read(struct upd *u)
{
	u->dirty = 1;
	return update_sync(u);
}

/* Writes output [x, final) of the plan, with records as the rules at the
 * top of this section say.  Returns 0 or -1. */
static int
update_run(struct upd *u, uint64_t x)
{
	const struct plan *p = &u->p;

	while (x < p->final) {
		uint64_t sx = plan_src(p, x), c = p->final - x;
		int data;

		if (sx == x) {			/* a run already in place */
			size_t i = plan_index(p, x);

			x = p->dst[i] + p->run[i].len;
			continue;
		}
		if (c > MBOX_UPDATE_CHUNK)
			c = MBOX_UPDATE_CHUNK;
		if (u->jfd >= 0 && c > u->slotcap)
			c = u->slotcap;
		if (update_fill(u, x, c) < 0)
			return -1;
		if (u->jfd >= 0 && x + c > plan_src(p, u->redo)) {
			data = x + c > sx;
			if ((u->redo != x || data) &&
			    (update_sync(u) < 0 || journal_write(u, x, data ? c : 0) < 0))
				return -1;
			u->redo = data ? x + c : x;
		}
		if (update_overwrite(u, x, u->buf, c) < 0)
			return -1;
		x += c;
	}
	return 0;
}

/* After the last chunk: the record D = final, the cut, the sync. */
static int
update_finish(struct upd *u)
{
	struct mailbox *mb = u->mb;

	if (u->jfd >= 0 && (update_sync(u) < 0 || (u->redo != u->p.final &&
	    journal_write(u, u->p.final, 0) < 0)))
		return -1;
	u->redo = u->p.final;
	u->written = u->dirty = 1;
	if (ftruncate(mb->fd, (off_t)u->p.final) < 0) {
		logmsg(LOG_ERR, "%s: ftruncate: %s", mb->path, strerror(errno));
		return -1;
	}
	return update_sync(u);
}

/*
 * The blank lines that start mail appended since the scan separate it from
 * the last message scanned; with nothing kept before it they would start
 * the file, which is then no mbox.  Returns how many octets to leave out.
 */
static uint64_t
tail_skip(struct mailbox *mb, int first, off_t cur)
{
	unsigned char b[64];
	ssize_t n, i;

	if (!first || cur <= mb->size)
		return 0;
	n = read_at(mb->fd, b, sizeof(b), mb->size);
	for (i = 0; i < n && b[i] == '\n'; i++)
		;
	return n > 0 ? (uint64_t)i : 0;
}

/*
 * The write phase of UPDATE, under both locks, with signals blocked by
 * the caller; cur is the end of file now.  Returns MB_OK or MB_TEMP: the
 * mailbox unchanged (journal emptied) if the failure came before its
 * first write, else the journal left for the next session to complete.
 */
int
update_compact(struct mailbox *mb, off_t cur)
{
	struct upd u;
	struct plan *p = &u.p;
	unsigned i;
	int r = MB_OK;

	update_init(&u, mb, mb->journal_fd);
	p->old = (uint64_t)cur;
	if (mb->pseudo)
		plan_add(p, 0, (uint64_t)(mb->count > 0 ? mb->msgs[0].from :
		    mb->size));
	for (i = 0; i < mb->count; i++) {
		off_t end = i + 1 < mb->count ? mb->msgs[i + 1].from : mb->size;

		if (!(mb->msgs[i].flags & MSG_DELETED))
			plan_add(p, (uint64_t)mb->msgs[i].from,
			    (uint64_t)(end - mb->msgs[i].from));
	}
	plan_add(p, (uint64_t)mb->size + tail_skip(mb, p->n == 0, cur),
	    (uint64_t)(cur - mb->size) - tail_skip(mb, p->n == 0, cur));
	if (plan_seal(p) < 0)
		fatalx("UPDATE plan out of order");
	plan_set_tail_len(p);
	u.redo = plan_start(p);
	if (u.redo == p->final)		/* only a cut, which is atomic */
		u.jfd = -1;
	if (u.jfd >= 0 && (update_sync_read(&u) < 0 || journal_begin(&u) < 0))
		r = MB_TEMP;
	else if (update_run(&u, u.redo) < 0 || update_finish(&u) < 0) {
		r = MB_TEMP;
		if (u.jfd >= 0 && !u.written && journal_clear(&u) == 0)
			logmsg(LOG_NOTICE, "%s: update failed, mailbox "
			    "unchanged", mb->path);
		else if (u.jfd >= 0)
			logmsg(LOG_NOTICE, "%s: update interrupted; the next "
			    "session completes it from the journal", mb->path);
	} else if (u.jfd >= 0) {
		if (journal_clear(&u) < 0)
			logmsg(LOG_ERR, "%s: update done but the journal "
			    "was not emptied", mb->path);
		logmsg(LOG_INFO, "update: %llu -> %llu octets, %u records, "
		    "%llu octets journaled", (unsigned long long)p->old,
		    (unsigned long long)p->final, u.records,
		    (unsigned long long)u.journaled);
	}
	update_free(&u);
	return r;
}

/* ---- recovery ------------------------------------------------------- */

/* Does the file hold data at pos?  (A file cut after the final record
 * holds that record's data, written and synced before the cut.) */
static int
file_holds(struct mailbox *mb, uint64_t pos, const unsigned char *data,
    uint64_t len)
{
	while (len > 0) {
		size_t n = min_size(POP3D_BLOCK, len);

		if (read_at(mb->fd, mb->buf, n, (off_t)pos) != (ssize_t)n ||
		    memcmp(mb->buf, data, n) != 0)
			return 0;
		pos += n;
		data += n;
		len -= n;
	}
	return 1;
}

/*
 * Completes an interrupted UPDATE, under both locks, before the scan; st
 * is the mailbox's fstat, refreshed when the file changed.
 *
 * - An empty journal: nothing pending.
 * - Both files are synced first: after a kill they may be partly in the
 *   page cache, and nothing may be written on the strength of a record
 *   that a power cut could still take back.
 * - A torn header (bad magic or MD5): the header is synced before the
 *   first mailbox write, so the mailbox was never written; the journal is
 *   emptied and the mailbox left alone.  Any other journal that cannot be
 *   carried out here (it names another device or inode: the mailbox was
 *   replaced; or the file was rewritten since) is kept as it is, with an
 *   error logged, and the session may read but not UPDATE: only an
 *   administrator can tell which file the journal's data belongs to.
 * - Otherwise the redo point D comes from the newest valid record (or is
 *   the first octet that moves).  Mail may have been appended since the
 *   crash: our locks died with the process.  The tail digest (octets just
 *   before old, which no write of the plan touches) tells whether the file
 *   was cut: a file at least old long with the digest intact was not, and
 *   [old, end) is new mail; a file cut after the record D = final (the
 *   only time it can be) needs nothing but that record's data, which it
 *   then holds (else the file was rewritten since, see below), and any
 *   mail after final is in place.  A file that is neither was rewritten
 *   by another program after the crash: it is left alone and the journal
 *   kept, as above.
 * - The record's data is written again and the plan carried out from D.
 *   New mail [old, end) then gets a plan of its own, generation g + 1
 *   (keep [0, final), move [old, end) down to final), switched to by a
 *   record, so that a crash during the recovery is recovered as well.
 * Returns MB_OK, or MB_TEMP on an I/O error (the journal stays).
 */
int
update_recover(struct mailbox *mb, struct stat *st)
{
	struct plan *p;
	struct stat jst;
	struct upd u;
	struct jrec rec;
	const char *why;
	unsigned char d[MD5_DIGEST_LENGTH];
	uint64_t z = (uint64_t)st->st_size, redo0, newmail = 0;
	int have = 0, cut = 0, r = MB_OK;
	sigset_t all, old;

	if (fstat(mb->journal_fd, &jst) < 0) {
		logmsg(LOG_ERR, "%s: journal fstat: %s", mb->path,
		    strerror(errno));
		return MB_TEMP;
	}
	if (jst.st_size == 0)
		return MB_OK;
	update_init(&u, mb, mb->journal_fd);
	p = &u.p;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	/* after a kill, the journal and the mailbox may still be partly in
	 * the page cache: what is read here must be on disk before any
	 * write is based on it (a record that a power cut could still take
	 * back would otherwise direct writes that destroy the octets the
	 * older record needs) */
	if (journal_sync(&u) < 0 || update_sync_read(&u) < 0)
		goto fail;
	why = journal_load(&u, &jst, st, &rec, &have);
	if (why == NULL) {
		int intact = z >= p->old && journal_tail(mb, p, d) == 0 &&
		    memcmp(d, p->tail, sizeof(d)) == 0;

		cut = !intact && u.redo == p->final && z >= p->final &&
		    (!have || file_holds(mb, rec.pos, u.buf, rec.len));
		if (!intact && !cut)
			why = "the mailbox was rewritten by another program "
			    "after the interrupted update; left as it is";
	}
	if (why != NULL && strcmp(why, "torn header") == 0) {
		logmsg(LOG_NOTICE, "%s: journal discarded: %s", mb->path, why);
		if (journal_clear(&u) < 0)
			r = MB_TEMP;
		goto done;
	}
	if (why != NULL) {
		logmsg(LOG_ERR, "%s: pending journal kept: %s; no UPDATE of "
		    "this maildrop until an administrator resolves it "
		    "(README, Crash safety)", mb->path, why);
		mb->journal_held = 1;
		goto done;
	}
	redo0 = u.redo;
	if (have && rec.len > 0 &&
	    update_overwrite(&u, rec.pos, u.buf, rec.len) < 0)
		goto fail;
	if (cut && update_sync(&u) < 0)
		goto fail;
	while (!cut) {
		uint64_t base = p->final;

		if (update_run(&u, u.redo) < 0)
			goto fail;
		if (z == p->old) {
			if (update_finish(&u) < 0)
				goto fail;
			break;
		}
		newmail += z - p->old;
		if (update_sync(&u) < 0 ||
		    plan_gen(p, p->gen + 1, base, p->old, z) < 0)
			goto fail;
		plan_set_tail_len(p);
		if (journal_tail(mb, p, p->tail) < 0 || journal_write(&u, base, 0) < 0)
			goto fail;
		u.redo = base;
	}
	if (journal_clear(&u) < 0)
		goto fail;
	logmsg(LOG_NOTICE, "%s: completed an interrupted update from the "
	    "journal: redone from octet %llu, %llu octets now, %llu octets "
	    "delivered meanwhile kept", mb->path, (unsigned long long)redo0,
	    (unsigned long long)(cut ? z : p->final),
	    (unsigned long long)newmail);
	if (fstat(mb->fd, st) < 0) {
		logmsg(LOG_ERR, "%s: fstat: %s", mb->path, strerror(errno));
		r = MB_TEMP;
	}
	goto done;
fail:
	logmsg(LOG_ERR, "%s: completing the interrupted update failed; the "
	    "next session tries again", mb->path);
	r = MB_TEMP;
done:
	sigprocmask(SIG_SETMASK, &old, NULL);
	update_free(&u);
	return r;
}
