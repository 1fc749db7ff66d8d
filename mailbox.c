/*
 * mailbox.c: the user's mbox maildrop, as the session sees it: open and
 * load (locks, recovery of an interrupted UPDATE, cache or scan, UIDLs),
 * close, the message list, change detection before RETR/TOP, sending a
 * message (TOP's cut), and mailbox_update(), the UPDATE orchestrator.
 *
 * The file is hostile input: everything is read in POP3D_BLOCK pieces,
 * no line or message is ever held whole, and per message only a small
 * struct msg is kept (mailbox_int.h).
 * Calls: scan.c, uidl.c, lock.c, cache.c, update.c, io.c, log.c.
 */
#include <sys/stat.h>
#include <sys/types.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

#include "mailbox_int.h"

/* ---- change detection ----------------------------------------------- */

/*
 * Checks that the file is the one scanned, changed at most by appending.
 * which: a message index to verify, or -1 for every message.  *cur gets
 * the current size.  Returns MB_OK, MB_CHANGED or MB_TEMP.
 */
static int
verify_file(struct mailbox *mb, long which, off_t *cur)
{
	struct stat st, lst;
	unsigned i;

	if (fstat(mb->fd, &st) < 0) {
		logmsg(LOG_ERR, "%s: fstat: %s", mb->path, strerror(errno));
		return MB_TEMP;
	}
	if (lstat(mb->path, &lst) < 0 || lst.st_dev != mb->dev ||
	    lst.st_ino != mb->ino || st.st_size < mb->size)
		goto changed;
	*cur = st.st_size;
	if (st.st_size == mb->size && st.st_mtim.tv_sec == mb->mtime.tv_sec &&
	    st.st_mtim.tv_nsec == mb->mtime.tv_nsec)
		return MB_OK;
	if (mb->tail_len > 0 && !scan_fp_ok(mb, mb->size - mb->tail_len,
	    mb->tail_len, mb->tail_fp))
		goto changed;
	if (which >= 0) {
		const struct msg *m = &mb->msgs[which];

		if (!scan_fp_ok(mb, m->from, m->fp_len, m->fp))
			goto changed;
		return MB_OK;
	}
	if (mb->pseudo && !scan_fp_ok(mb, 0, mb->pseudo_fp_len, mb->pseudo_fp))
		goto changed;
	for (i = 0; i < mb->count; i++)
		if (!scan_fp_ok(mb, mb->msgs[i].from, mb->msgs[i].fp_len,
		    mb->msgs[i].fp))
			goto changed;
	return MB_OK;
changed:
	logmsg(LOG_NOTICE, "%s: changed by another program", mb->path);
	return MB_CHANGED;
}

int
mailbox_check(struct mailbox *mb, unsigned n)
{
	off_t cur;

	if (mb->fd < 0)
		return MB_OK;
	return verify_file(mb, n == 0 ? -1 : (long)n - 1, &cur);
}

void
mailbox_hold_update(struct mailbox *mb)
{
	mb->journal_held = 1;
}

int
mailbox_pseudo(const struct mailbox *mb)
{
	return mb->pseudo;
}

uint64_t
mailbox_scanned_octets(const struct mailbox *mb)
{
	return mb->scanned;
}

/* ---- open and close ------------------------------------------------- */

/* The checks on the opened file: regular, the owner's, one link. */
static int
file_ok(const char *path, const struct stat *st, uid_t owner)
{
	const char *why = NULL;

	if (!S_ISREG(st->st_mode))
		why = "not a regular file";
	else if (st->st_uid != owner)
		why = "not owned by the user";
	else if (st->st_nlink != 1)
		why = "has more than one link";
	if (why == NULL)
		return 1;
	logmsg(LOG_ERR, "%s: %s", path, why);
	return 0;
}

/* Takes st as the file scanned: what change detection compares with. */
static void
snapshot(struct mailbox *mb, const struct stat *st)
{
	mb->dev = st->st_dev;
	mb->ino = st->st_ino;
	mb->size = st->st_size;
	mb->mtime = st->st_mtim;
}

/* No interrupted UPDATE waits in the journal. */
static int
journal_idle(const struct mailbox *mb)
{
	struct stat st;

	return mb->journal_fd < 0 ||
	    (fstat(mb->journal_fd, &st) == 0 && st.st_size == 0);
}

/* Locks, re-checks, completes an interrupted UPDATE, scans, settles and
 * unlocks. */
static int
load_file(struct mailbox *mb, uid_t owner)
{
	struct stat st, lst;
	off_t start = 0;		/* where the scan starts */
	uint64_t octets = 0;
	int r, unchanged = 0;		/* the cache is up to date */

	if ((r = lock_take(mb)) != MB_OK)
		return r;
	if (fstat(mb->fd, &st) < 0 || lstat(mb->path, &lst) < 0) {
		logmsg(LOG_ERR, "%s: stat: %s", mb->path, strerror(errno));
		r = MB_TEMP;
	} else if (!file_ok(mb->path, &st, owner))
		r = MB_PERM;
	else if (lst.st_dev != st.st_dev || lst.st_ino != st.st_ino) {
		logmsg(LOG_NOTICE, "%s: replaced while opening", mb->path);
		r = MB_TEMP;
	}
	if (r == MB_OK && mb->journal_fd >= 0)
		r = update_recover(mb, &st);	/* an interrupted UPDATE */
	if (r == MB_OK) {
		const char *why = cache_load(mb, &st, &start, &octets,
		    &unchanged);

		if (why != NULL && why[0] != '\0')
			logmsg(LOG_INFO, "%s: scan cache not used: %s",
			    mb->path, why);
		snapshot(mb, &st);
		r = scan_file(mb, start, octets);
	}
	if (r == MB_OK)
		r = scan_tail(mb);
	if (r == MB_OK && !unchanged)
		cache_write(mb);
	if (r == MB_OK)
		(void)lock_settle(mb, MBOX_SETTLE_MS);
	lock_release(mb);
	return r;
}

int
mailbox_file(const char *path, uid_t owner, int *fd)
{
	struct stat st;

	*fd = open(path, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC |
	    O_NONBLOCK);
	if (*fd < 0 && errno == ENOENT)
		return MB_OK;		/* an empty maildrop */
	if (*fd < 0) {
		logmsg(LOG_ERR, "%s: open: %s", path, strerror(errno));
		return (errno == EMFILE || errno == ENFILE ||
		    errno == ENOMEM || errno == EINTR || errno == EIO) ?
		    MB_TEMP : MB_PERM;
	}
	if (fstat(*fd, &st) == 0 && file_ok(path, &st, owner))
		return MB_OK;
	close(*fd);
	*fd = -1;
	return MB_PERM;
}

int
mailbox_open(struct mailbox **mbp, const char *path,
    const struct mailbox_opts *o)
{
	int fd, r = mailbox_file(path, o->owner, &fd);

	*mbp = NULL;
	return r != MB_OK ? r : mailbox_open_fd(mbp, path, fd, o);
}

int
mailbox_open_fd(struct mailbox **mbp, const char *path, int fd,
    const struct mailbox_opts *o)
{
	struct mailbox *mb = xmalloc(sizeof(*mb));
	struct stat st;
	size_t len = strlen(path);
	unsigned i;
	int r;

	*mbp = NULL;
	memset(mb, 0, sizeof(*mb));
	mb->mode = o->mode;
	mb->uidl_format = o->uidl_format ? o->uidl_format : POP3D_UIDL_FORMAT;
	mb->lock_timeout = o->lock_timeout;
	mb->max_messages = o->max_messages ? o->max_messages : MBOX_MAX_MESSAGES;
	mb->max_bytes = o->max_bytes;
	mb->journal_fd = o->journal_fd;
	mb->cache_fd = o->cache_fd;
	mb->pseudo_ok = o->pseudo_ok;
	mb->shared = o->shared;
	mb->path = xstrdup(path);
	mb->lockpath = xmalloc(len + sizeof(".lock"));
	memcpy(mb->lockpath, path, len);
	memcpy(mb->lockpath + len, ".lock", sizeof(".lock"));
	mb->fd = fd;
	if (mb->fd < 0) {
		*mbp = mb;		/* an empty maildrop; never created */
		return MB_OK;
	}
	mb->buf = xmalloc(POP3D_BLOCK);
	if (fstat(mb->fd, &st) < 0) {
		logmsg(LOG_ERR, "%s: fstat: %s", path, strerror(errno));
		r = MB_TEMP;
	} else if (!file_ok(mb->path, &st, o->owner))
		r = MB_PERM;
	else if (st.st_size == 0 && journal_idle(mb)) {
		/* Nothing to read and no update to finish: no locks (in
		 * root mode each dotlock costs a run of dotlockfile).  Mail
		 * that arrives now is appended mail, as after a scan. */
		snapshot(mb, &st);
		r = MB_OK;
	} else
		r = load_file(mb, o->owner);
	if (r != MB_OK) {
		mailbox_close(mb);
		return r;
	}
	uidl_unique(mb);
	mb->live = mb->count;
	for (i = 0; i < mb->count; i++)
		mb->live_octets += mb->msgs[i].size;
	*mbp = mb;
	return MB_OK;
}

void
mailbox_close(struct mailbox *mb)
{
	unsigned i;

	if (mb == NULL)
		return;
	if (mb->fd >= 0) {
		lock_release(mb);
		close(mb->fd);
	}
	if (mb->xuidl != NULL)
		for (i = 0; i < mb->count; i++)
			free(mb->xuidl[i]);
	free(mb->xuidl);
	free(mb->msgs);
	free(mb->buf);
	free(mb->lockpath);
	free(mb->path);
	free(mb);
}

/* ---- the message list ----------------------------------------------- */

unsigned
mailbox_count(const struct mailbox *mb)
{
	return mb->count;
}

void
mailbox_stat(const struct mailbox *mb, unsigned *n, uint64_t *octets)
{
	*n = mb->live;
	*octets = mb->live_octets;
}

uint64_t
mailbox_size(const struct mailbox *mb, unsigned n)
{
	return mb->msgs[n - 1].size;
}

int
mailbox_is_deleted(const struct mailbox *mb, unsigned n)
{
	return (mb->msgs[n - 1].flags & MSG_DELETED) != 0;
}

void
mailbox_delete(struct mailbox *mb, unsigned n)
{
	struct msg *m = &mb->msgs[n - 1];

	if (m->flags & MSG_DELETED)
		return;
	m->flags |= MSG_DELETED;
	mb->live--;
	mb->live_octets -= m->size;
}

void
mailbox_reset(struct mailbox *mb)
{
	unsigned i;

	for (i = 0; i < mb->count; i++)
		mb->msgs[i].flags &= ~(uint32_t)MSG_DELETED;
	mb->live = mb->count;
	mb->live_octets = 0;
	for (i = 0; i < mb->count; i++)
		mb->live_octets += mb->msgs[i].size;
}

/* ---- output --------------------------------------------------------- */

/* Where TOP stops: after the blank line ending the header, then after
 * that many more LFs. */
struct top {
	long	 left;		/* body lines still to send */
	int	 in_header;
	int	 line;		/* 0: at line start, 1: after a lone CR, 2: text */
	int	 done;
};

/* Returns how many octets of p TOP sends. */
static size_t
top_cut(struct top *t, const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len && t->in_header) {
		unsigned char c = p[i++];

		if (c == '\n') {
			if (t->line != 2) {
				t->in_header = 0;
				if (t->left == 0) {
					t->done = 1;
					return i;
				}
			}
			t->line = 0;
		} else
			t->line = (c == '\r' && t->line == 0) ? 1 : 2;
	}
	while (i < len) {
		const unsigned char *lf = memchr(p + i, '\n', len - i);

		if (lf == NULL)
			return len;
		i = (size_t)(lf - p) + 1;
		if (--t->left == 0) {
			t->done = 1;
			return i;
		}
	}
	return len;
}

int
mailbox_send(struct mailbox *mb, unsigned n, long lines, struct out *out)
{
	const struct msg *m = &mb->msgs[n - 1];
	struct emit em;
	struct top top;
	off_t off, cur;
	int r;

	/* the caller ran mailbox_check() before its +OK */
	out_emit_init(&em);
	memset(&top, 0, sizeof(top));
	top.left = lines;
	top.in_header = 1;
	for (off = m->data; off < m->end && !top.done; ) {
		size_t len = min_size(POP3D_BLOCK, (uint64_t)(m->end - off));
		ssize_t got = read_at(mb->fd, mb->buf, len, off);

		if (got < 0) {
			logmsg(LOG_ERR, "%s: read: %s", mb->path,
			    strerror(errno));
			return MB_TEMP;
		}
		if ((size_t)got != len) {
			logmsg(LOG_NOTICE, "%s: truncated by another program",
			    mb->path);
			return MB_CHANGED;
		}
		off += (off_t)len;
		if (lines >= 0)
			len = top_cut(&top, mb->buf, len);
		out_emit(out, mb->buf, len, &em);
		if (out->error)
			return MB_CLIENT;
	}
	/* a rewrite during the reads must not end in a complete message */
	if ((r = verify_file(mb, (long)n - 1, &cur)) != MB_OK)
		return r;
	out_emit_end(out, &em);
	return out->error ? MB_CLIENT : MB_OK;
}

int
mailbox_update(struct mailbox *mb)
{
	sigset_t all, old;
	off_t cur;
	int r;

	if (mb->fd < 0 || mb->live == mb->count)
		return MB_OK;		/* a read-only session writes nothing */
	if (mb->journal_held) {
		logmsg(LOG_ERR, "%s: no UPDATE: a pending journal that does "
		    "not fit this file is kept (README, Crash safety)",
		    mb->path);
		return MB_TEMP;
	}
	if ((r = lock_take(mb)) != MB_OK)
		return r;
	r = verify_file(mb, -1, &cur);
	/* the cache describes the file before the compaction: drop it
	 * first, so that no session ever sees one for a half-moved file */
	if (r == MB_OK && mb->cache_fd >= 0 && ftruncate(mb->cache_fd, 0) < 0) {
		logmsg(LOG_ERR, "%s: scan cache: ftruncate: %s", mb->path,
		    strerror(errno));
		r = MB_TEMP;
	}
	if (r == MB_OK) {
		sigfillset(&all);
		sigprocmask(SIG_BLOCK, &all, &old);
		r = update_compact(mb, cur);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	if (r == MB_OK)
		cache_after_update(mb);
	lock_release(mb);
	return r;
}

uint64_t
mailbox_file_dev(const struct mailbox *mb, dev_t dev)
{
	return mb->shared ? 0 : (uint64_t)dev;
}
