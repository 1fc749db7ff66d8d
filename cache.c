/*
 * cache.c: the scan cache: an untrusted hint that lets a session on an
 * unchanged or appended-to maildrop scan only the new part; loaded after
 * checks, written after a scan and after UPDATE.
 * Calls: scan.c (fingerprints, From_ lines, the tail), lock.c (settle),
 * io.c, log.c.
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

#include "mailbox_int.h"

/* ---- the scan cache --------------------------------------------------- */

/*
 * The scan cache lets a session on an unchanged or appended-to maildrop
 * scan only the new part.  It is a file in the state directory (opened
 * before the privilege drop, mb->cache_fd), written after each full or
 * resumed scan in UIDL_DIGEST mode: a header, the struct msg of every
 * message but the last (appended mail may still change where the last one
 * ends, so it is scanned again) and an MD5 of both.  Host-specific: same
 * struct layout and byte order, checked by version and struct size.
 *
 * The cache is untrusted input and only a hint: it is used only when its
 * digest, its structure and the file agree (same inode, not shorter, same
 * mtime when the size is the same, the same octets at the old end, the
 * fingerprints of the first, the last and some messages between, a blank
 * line then a valid From_ line where the scan resumes); any doubt means
 * a full scan.  A wrong cache that passed could still not damage mail:
 * UPDATE re-checks the fingerprint of every kept message before writing
 * (verify_file(mb, -1) in mailbox.c), and RETR/TOP check the message
 * they send.
 */

#define CACHE_VERSION	2

struct cache_hdr {
	char		 magic[8];
	uint64_t	 version, msg_size, mode;
	uint64_t	 dev, ino, size, mtime_sec, mtime_nsec;
	uint64_t	 tail_fp, tail_len;
	uint64_t	 count;		/* messages in the array */
	uint64_t	 resume;	/* From_ line of the last message */
	uint64_t	 pseudo, pseudo_fp, pseudo_fp_len, uidvalidity;
};

static const char cache_magic[8] = "pop3dC1";

static void
cache_sum(const struct cache_hdr *h, const struct msg *m, size_t n,
    unsigned char d[MD5_DIGEST_LENGTH])
{
	MD5_CTX ctx;

	MD5Init(&ctx);
	MD5Update(&ctx, (const unsigned char *)h, sizeof(*h));
	MD5Update(&ctx, (const unsigned char *)m, n * sizeof(*m));
	MD5Final(d, &ctx);
}

/* Writes the cache for the scan just done (a hint: failures are only
 * logged, and no fsync: a torn cache fails its digest). */
void
cache_write(struct mailbox *mb)
{
	struct cache_hdr h;
	unsigned char d[MD5_DIGEST_LENGTH];
	size_t n, len;

	if (mb->cache_fd < 0 || mb->mode != UIDL_DIGEST || mb->capped ||
	    mb->count < 2)
		return;
	n = mb->count - 1;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, cache_magic, sizeof(h.magic));
	h.version = CACHE_VERSION;
	h.msg_size = sizeof(struct msg);
	h.mode = (uint64_t)mb->mode;
	h.dev = mailbox_file_dev(mb, mb->dev);
	h.ino = (uint64_t)mb->ino;
	h.size = (uint64_t)mb->size;
	h.mtime_sec = (uint64_t)mb->mtime.tv_sec;
	h.mtime_nsec = (uint64_t)mb->mtime.tv_nsec;
	h.tail_fp = mb->tail_fp;
	h.tail_len = mb->tail_len;
	h.count = n;
	h.resume = (uint64_t)mb->msgs[n].from;
	h.pseudo = (uint64_t)mb->pseudo;
	h.pseudo_fp = mb->pseudo_fp;
	h.pseudo_fp_len = mb->pseudo_fp_len;
	h.uidvalidity = mb->uidvalidity;
	/* written from where it is: no copy of the array (memory limits) */
	len = n * sizeof(struct msg);
	cache_sum(&h, mb->msgs, n, d);
	if (write_at(mb->cache_fd, (const unsigned char *)&h, sizeof(h),
	    0) < 0 || write_at(mb->cache_fd, (const unsigned char *)mb->msgs,
	    len, (off_t)sizeof(h)) < 0 || write_at(mb->cache_fd, d, sizeof(d),
	    (off_t)(sizeof(h) + len)) < 0 || ftruncate(mb->cache_fd,
	    (off_t)(sizeof(h) + len + sizeof(d))) < 0)
		logmsg(LOG_NOTICE, "%s: scan cache not written: %s", mb->path,
		    strerror(errno));
}

/* Is the array plausible as a scan of h->size octets?  The message
 * fields only our scanner sets are checked to have their scan values. */
static int
cache_sane(const struct cache_hdr *h, const struct msg *m, size_t n)
{
	off_t prev_end = -1;
	size_t i;

	if (h->pseudo > 1 || (h->pseudo && (h->pseudo_fp_len == 0 ||
	    h->pseudo_fp_len > POP3D_BLOCK ||
	    h->pseudo_fp_len > (uint64_t)m[0].from)) ||
	    (!h->pseudo && m[0].from != 0))
		return 0;
	for (i = 0; i < n; i++) {
		uint64_t len;

		if (m[i].from <= prev_end || m[i].from >= m[i].data ||
		    m[i].data > m[i].end || m[i].fp_len == 0 ||
		    m[i].fp_len > POP3D_BLOCK ||
		    (uint64_t)m[i].from + m[i].fp_len > h->size ||
		    m[i].flags != 0 || m[i].xuid != 0 || m[i].suffix != 0)
			return 0;
		len = (uint64_t)(m[i].end - m[i].data);
		if (m[i].size < len || m[i].size > 2 * len + 2)
			return 0;
		prev_end = m[i].end;
	}
	/* a separator (a blank line) between the last one and resume */
	return (uint64_t)prev_end < h->resume && h->resume - (uint64_t)prev_end
	    <= 2 && h->resume < h->size;
}

/* A blank line at end, then a valid From_ line at resume that fits the
 * scanner's head[].  A longer one (judged by its date at its end) is
 * valid too, but not checked here: the cache then goes unused, and the
 * full scan costs only time. */
static int
cache_resume_ok(struct mailbox *mb, off_t end, off_t resume)
{
	size_t blank = (size_t)(resume - end);
	const unsigned char *lf;
	ssize_t n;

	n = read_at(mb->fd, mb->buf, blank, end);
	if (n != (ssize_t)blank || mb->buf[blank - 1] != '\n' ||
	    (blank == 2 && mb->buf[0] != '\r'))
		return 0;
	n = read_at(mb->fd, mb->buf, MBOX_HEAD_MAX, resume);
	if (n <= 0 || (lf = memchr(mb->buf, '\n', (size_t)n)) == NULL)
		return 0;
	return scan_from_valid(mb->buf, (size_t)(lf - mb->buf) + 1);
}

/*
 * Loads the cache into mb (messages, pseudo-message, UIDVALIDITY) if it
 * holds for the file st.  Returns NULL with *resume (where to scan from),
 * *octets (the sizes loaded) and *unchanged (the file has the cached
 * size) set, or why not ("" for no cache: nothing to say).
 */
const char *
cache_load(struct mailbox *mb, const struct stat *st, off_t *resume,
    uint64_t *octets, int *unchanged)
{
	struct cache_hdr h;
	struct stat cst;
	struct msg *m;
	unsigned char d[MD5_DIGEST_LENGTH], want[MD5_DIGEST_LENGTH];
	uint64_t sum = 0;
	size_t n, i, len;
	const char *why = NULL;

	if (mb->cache_fd < 0 || mb->mode != UIDL_DIGEST)
		return "";
	if (fstat(mb->cache_fd, &cst) < 0)
		return "fstat failed";
	if (cst.st_size == 0)
		return "";
	if ((uint64_t)cst.st_size < sizeof(h) + MD5_DIGEST_LENGTH ||
	    read_at(mb->cache_fd, (unsigned char *)&h, sizeof(h), 0) !=
	    (ssize_t)sizeof(h))
		return "short";
	if (memcmp(h.magic, cache_magic, sizeof(h.magic)) != 0 ||
	    h.version != CACHE_VERSION || h.msg_size != sizeof(struct msg) ||
	    h.mode != (uint64_t)mb->mode)
		return "another version or mode";
	if (h.dev != mailbox_file_dev(mb, st->st_dev) ||
	    h.ino != (uint64_t)st->st_ino)
		return "another file";
	if (h.size > (uint64_t)st->st_size)
		return "the file shrank";
	if (h.size == (uint64_t)st->st_size &&
	    (h.mtime_sec != (uint64_t)st->st_mtim.tv_sec ||
	    h.mtime_nsec != (uint64_t)st->st_mtim.tv_nsec))
		return "the file was rewritten";
	/* limits before allocation: a message takes at least 2 octets */
	if (h.count == 0 || h.count >= mb->max_messages ||
	    h.count > h.size / 2 || h.tail_len != min_size(MBOX_TAIL_MAX,
	    h.size))
		return "implausible header";
	n = (size_t)h.count;
	len = sizeof(h) + n * sizeof(struct msg) + MD5_DIGEST_LENGTH;
	if ((uint64_t)cst.st_size != len)
		return "wrong length";
	m = xreallocarray(NULL, n, sizeof(*m));
	if (read_at(mb->cache_fd, (unsigned char *)m, n * sizeof(*m),
	    (off_t)sizeof(h)) != (ssize_t)(n * sizeof(*m)) ||
	    read_at(mb->cache_fd, want, sizeof(want),
	    (off_t)(len - sizeof(want))) != (ssize_t)sizeof(want))
		why = "short read";
	else {
		cache_sum(&h, m, n, d);
		if (memcmp(d, want, sizeof(d)) != 0)
			why = "bad digest";
	}
	if (why != NULL)
		;
	else if (!cache_sane(&h, m, n))
		why = "implausible messages";
	else if (!scan_fp_ok(mb, (off_t)(h.size - h.tail_len),
	    (uint32_t)h.tail_len, h.tail_fp))
		why = "the old end differs";
	else if (h.pseudo && !mb->pseudo_ok)
		why = "the pseudo-message is no longer trusted";
	else if (h.pseudo && !scan_fp_ok(mb, 0, (uint32_t)h.pseudo_fp_len,
	    h.pseudo_fp))
		why = "the pseudo-message differs";
	for (i = 0; why == NULL && i < MBOX_CACHE_SPOT; i++) {
		/* 0, n - 1 and evenly between */
		size_t k = i == MBOX_CACHE_SPOT - 1 ? n - 1 :
		    i * n / MBOX_CACHE_SPOT;

		if (!scan_fp_ok(mb, m[k].from, m[k].fp_len, m[k].fp))
			why = "a message differs";
	}
	if (why == NULL && !cache_resume_ok(mb, m[n - 1].end,
	    (off_t)h.resume))
		why = "no From_ line where the scan resumes";
	for (i = 0; why == NULL && i < n; i++)
		sum += m[i].size;
	if (why == NULL && mb->max_bytes != 0 && sum > mb->max_bytes)
		why = "over the octet limit";
	if (why != NULL) {
		free(m);
		return why;
	}
	free(mb->msgs);
	mb->msgs = m;
	mb->count = mb->alloc = (unsigned)n;
	mb->pseudo = (int)h.pseudo;
	mb->pseudo_fp = h.pseudo_fp;
	mb->pseudo_fp_len = (uint32_t)h.pseudo_fp_len;
	mb->uidvalidity = (uint32_t)h.uidvalidity;
	*resume = (off_t)h.resume;
	*octets = sum;
	*unchanged = h.size == (uint64_t)st->st_size;
	return NULL;
}


/* Once the first message was deleted, the next one starts the file: does
 * its header have a line starting with X-IMAP (the pseudo-message's mark,
 * the UIDVALIDITY's source), so that a full scan could see it otherwise?
 * m: its scan; it is now at offset 0. */
static int
first_has_imap(struct mailbox *mb, const struct msg *m)
{
	const unsigned char *p = mb->buf, *e, *lf;
	ssize_t n = read_at(mb->fd, mb->buf, m->fp_len, 0);

	if (n != (ssize_t)m->fp_len)
		return 1;
	for (e = p + n; p < e; p = lf + 1) {
		if (scan_hdr_is(p, (size_t)(e - p), "X-IMAP"))
			return 1;
		if ((lf = memchr(p, '\n', (size_t)(e - p))) == NULL)
			break;
	}
	return 0;
}

/*
 * After a successful UPDATE, under the locks: turns mb into the scan of
 * the compacted file (the kept messages at their new offsets; the mail
 * appended meanwhile now follows them and is left to the next scan) and
 * writes the scan cache for it, so that the session after a DELE session
 * does not scan the whole file again; not when the clock stays on the
 * file's mtime for more than MBOX_SETTLE_QUIT_MS (whole-second mtimes):
 * QUIT would wait; nor when the message now first might be taken for the
 * pseudo-message.  Past the first check, mb describes the compacted file
 * (the kept messages renumbered), cache or not: the session is ending.
 */
void
cache_after_update(struct mailbox *mb)
{
	struct stat st;
	off_t at = mb->pseudo && mb->count > 0 ? mb->msgs[0].from : 0;
	int new_first = !mb->pseudo && mb->count > 0 &&
	    (mb->msgs[0].flags & MSG_DELETED);
	unsigned i, k = 0;

	if (mb->cache_fd < 0 || mb->mode != UIDL_DIGEST || mb->capped)
		return;
	for (i = 0; i < mb->count; i++) {
		struct msg *m = &mb->msgs[i];
		off_t end = i + 1 < mb->count ? mb->msgs[i + 1].from : mb->size;
		off_t shift = m->from - at;

		if (m->flags & MSG_DELETED)
			continue;
		at += end - m->from;
		m->from -= shift;
		m->data -= shift;
		m->end -= shift;
		m->flags = 0;
		m->suffix = 0;
		mb->msgs[k++] = *m;
	}
	mb->count = k;
	mb->size = at;
	if ((new_first && k > 0 && first_has_imap(mb, &mb->msgs[0])) ||
	    fstat(mb->fd, &st) < 0 || st.st_size < at ||
	    scan_tail(mb) != MB_OK)
		return;
	mb->mtime = st.st_mtim;
	if (lock_settle(mb, MBOX_SETTLE_QUIT_MS))
		cache_write(mb);
}
