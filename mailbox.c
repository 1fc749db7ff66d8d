/*
 * mailbox.c: the user's mbox maildrop.  Open checks, the fcntl + dot
 * locks, the streaming scanner, UIDLs, change detection, message output
 * (LF->CRLF, dot-stuffing, TOP) and the in-place compaction at UPDATE.
 *
 * The file is hostile input: everything is read in POP3D_BLOCK pieces,
 * no line or message is ever held whole, and per message only a small
 * struct msg is kept.
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

#include "mailbox.h"

#define MSG_DELETED	0x1
#define MSG_XUID	0x2		/* xuid holds a valid X-UID value */

/* One message; 64 octets. */
struct msg {
	off_t		 from;		/* its From_ line */
	off_t		 data;		/* first octet of the content */
	off_t		 end;		/* end of the content, separator excluded */
	uint64_t	 size;		/* octets as RETR sends them */
	uint64_t	 fp;		/* digest of the fp_len octets at from */
	uint32_t	 fp_len;	/* From_ line + header, capped */
	uint32_t	 flags;
	uint32_t	 xuid;		/* X-UID value (UIDL_XUID) */
	uint32_t	 suffix;	/* duplicate id: "-suffix"; 0: none */
	unsigned char	 digest[8];	/* popa3d UIDL octets, in print order */
};

struct mailbox {
	int		 fd;		/* -1: no file, an empty maildrop */
	int		 locked;
	int		 lock_timeout;
	enum uidl_mode	 mode;
	const char	*uidl_format;	/* UIDL_XUID ids: the template */
	unsigned	 max_messages;	/* scan no further */
	uint64_t	 max_bytes;	/* octets as STAT counts; 0: none */
	int		 journal_fd;	/* UPDATE journal, or -1 */
	int		 journal_held;	/* a journal that does not fit: no UPDATE */
	int		 cache_fd;	/* scan cache, or -1 */
	int		 capped;	/* the scan stopped at a cap */
	uint64_t	 scanned;	/* octets the last scan read */
	char		*path;
	char		*lockpath;
	dev_t		 dev;
	ino_t		 ino;
	off_t		 size;		/* size scanned */
	struct timespec	 mtime;		/* mtime scanned */
	struct msg	*msgs;
	char		**xuidl;	/* X-UIDL values (UIDL_XUIDL) or NULL */
	unsigned	 count, alloc;
	unsigned	 live;		/* messages not deleted */
	uint64_t	 live_octets;
	uint32_t	 uidvalidity;	/* from X-IMAPbase:/X-IMAP:, 0: none */
	uint32_t	 uidlast;	/* the same header's last UID, 0: none */
	int		 pseudo_ok;	/* a pseudo-message first may be hidden */
	int		 pseudo;	/* hidden pseudo-message at offset 0 */
	uint64_t	 pseudo_fp;
	uint32_t	 pseudo_fp_len;
	uint64_t	 tail_fp;
	uint32_t	 tail_len;
	unsigned char	*buf;		/* POP3D_BLOCK */
};

/* ---- small I/O helpers -------------------------------------------- */

/* Reads len octets at off.  Returns the count read (short only at EOF),
 * or -1 with errno set. */
static ssize_t
read_at(int fd, unsigned char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done,
		    off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Writes len octets at off.  Returns 0, or -1 with errno set. */
static int
write_at(int fd, const unsigned char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done,
		    off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/* Digest of len octets at off, or -1 on a short read or error. */
static int
digest_at(struct mailbox *mb, off_t off, size_t len, uint64_t *v)
{
	ssize_t n = read_at(mb->fd, mb->buf, len, off);

	if (n < 0 || (size_t)n != len)
		return -1;
	*v = XXH3_64bits(mb->buf, len);
	return 0;
}

static size_t
min_size(size_t a, uint64_t b)
{
	return b < a ? (size_t)b : a;
}

/* ---- the From_ line ----------------------------------------------- */

static int
tok_is_word(const char *t, size_t n, const char *const *words)
{
	for (; *words != NULL; words++)
		if (n == 3 && strncasecmp(t, *words, 3) == 0)
			return 1;
	return 0;
}

static int
all_digits(const char *t, size_t n, size_t min, size_t max)
{
	size_t i;

	if (n < min || n > max)
		return 0;
	for (i = 0; i < n; i++)
		if (t[i] < '0' || t[i] > '9')
			return 0;
	return 1;
}

/* hh:mm or hh:mm:ss, hour with one or two digits. */
static int
tok_is_time(const char *t, size_t n)
{
	size_t h = (n > 1 && t[1] == ':') ? 1 : 2;

	if (n != h + 3 && n != h + 6)
		return 0;
	if (!all_digits(t, h, 1, 2) || t[h] != ':' ||
	    !all_digits(t + h + 1, 2, 2, 2))
		return 0;
	return n == h + 3 || (t[h + 3] == ':' && all_digits(t + h + 4, 2, 2, 2));
}

/* A zone: "PST", "MET", "DST", "+0100", "-0500". */
static int
tok_is_zone(const char *t, size_t n)
{
	size_t i;

	if (n == 5 && (t[0] == '+' || t[0] == '-'))
		return all_digits(t + 1, 4, 4, 4);
	if (n < 1 || n > 5)
		return 0;
	for (i = 0; i < n; i++)
		if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')))
			return 0;
	return 1;
}

#define FROM_TOKENS	(MBOX_HEAD_MAX / 2 + 1)

/*
 * Is the date, starting at token i of k, the rest of a From_ line?
 * weekday month day time [zone [zone]] year [zone] [remote from ...]
 */
static int
from_date_at(const char *const *t, const size_t *n, size_t i, size_t k)
{
	static const char *const days[] = { "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat", "Sun", NULL };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", NULL };
	size_t j, zones;

	if (k - i < 5 || !tok_is_word(t[i], n[i], days) ||
	    !tok_is_word(t[i + 1], n[i + 1], months) ||
	    !all_digits(t[i + 2], n[i + 2], 1, 2) ||
	    !tok_is_time(t[i + 3], n[i + 3]))
		return 0;
	for (j = i + 4, zones = 0; j < k && zones < 2 &&
	    tok_is_zone(t[j], n[j]); j++)
		zones++;
	if (j == k || !(all_digits(t[j], n[j], 4, 4) ||
	    all_digits(t[j], n[j], 2, 2)))
		return 0;
	j++;
	if (j < k && zones == 0 && tok_is_zone(t[j], n[j]))
		j++;		/* "remote" is too long to be a zone */
	if (j == k)
		return 1;
	return k - j >= 2 && n[j] == 6 && strncmp(t[j], "remote", 6) == 0 &&
	    n[j + 1] == 4 && strncmp(t[j + 1], "from", 4) == 0;
}

/*
 * Validates a whole From_ line (with its line end) the way mail readers
 * do: "From ", an envelope sender (any tokens, possibly none), then a
 * ctime-style date with the usual variants.  A body line such as
 * "From here we go" does not pass.
 */
static int
from_line_valid(const unsigned char *line, size_t len)
{
	const char *t[FROM_TOKENS];
	size_t n[FROM_TOKENS], k = 0, i;
	const char *s = (const char *)line;

	if (len < 5 || memcmp(s, "From ", 5) != 0)
		return 0;
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	for (i = 5; i < len && k < FROM_TOKENS; ) {
		size_t b;

		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i == len)
			break;
		for (b = i; i < len && s[i] != ' ' && s[i] != '\t'; i++)
			;
		t[k] = s + b;
		n[k++] = i - b;
	}
	if (i < len)
		return 0;
	for (i = 0; i + 5 <= k; i++)
		if (from_date_at(t, n, i, k))
			return 1;
	return 0;
}

/* ---- the scanner ---------------------------------------------------- */

/* LK_LONGFROM: a "From " line after a blank line, too long for head[]:
 * judged at its end, by the date in its last octets (tail[]). */
enum { LK_TEXT, LK_BLANK, LK_FROM, LK_LONGFROM };

/*
 * The scanner is fed the file in blocks and cuts them into lines.  The
 * first MBOX_HEAD_MAX octets of each line are gathered in head[] (across
 * block boundaries) and the line is classified once they are known (or
 * the line ended): a From_ line, a blank line or text.  The rest of a
 * longer line streams past in fragments.
 *
 * State and invariants:
 * - line_off is the file offset of the current line; line_len counts its
 *   octets so far; last2[] holds its last two octets (for CR before LF).
 * - boundary: the previous line was blank, or line_off is 0.  Only then
 *   can a From_ line start a message; at offset 0 any "From " line does,
 *   elsewhere it must carry a valid date.  A line too long for head[] is
 *   judged when it ends: its date is looked for in its last
 *   MBOX_FROM_TAIL octets, kept in tail[] (the envelope sender before it
 *   may be any length), and until then it only counts octets.
 * - in_msg: a message has started (after offset 0 it always has: a file
 *   not starting with "From " is malformed).  cur is that message; its
 *   size counts every content line already complete, as sent (LF not
 *   after CR counts as CRLF).
 * - pending: the last complete line was blank and is not counted yet: if
 *   a From_ line follows, it was the separator (excluded, and cur ends at
 *   blank_off); if text follows, it was content (2 octets).  At EOF a
 *   pending blank line is the final separator and excluded.
 * - in_header: between the From_ line and the first blank line.  There
 *   the UIDL digest takes the lines popa3d takes ("fixed"), and the
 *   X-UIDL/X-UID/X-IMAP/Subject values are noted.
 * - fp_open: the fingerprint digest still takes octets: From_ line and
 *   header, at most POP3D_BLOCK octets (fp_len).
 */
struct scan {
	struct mailbox	*mb;
	int		 error;		/* MB_PERM once malformed */
	off_t		 line_off;
	uint64_t	 line_len;
	unsigned char	 last2[2];
	int		 kind;		/* LK_ of the current line */
	int		 head_done;
	size_t		 head_len;
	int		 boundary;
	int		 in_msg, in_header, pending, first;
	off_t		 blank_off;
	struct msg	 cur;
	MD5_CTX		 uidl_ctx;
	XXH3_state_t	*fp_ctx;	/* fingerprint: XXH3, not MD5 (a
					 * tenth of the scan) */
	int		 fp_open;
	int		 fixed, received;	/* popa3d's header state */
	int		 ximap, folder;		/* pseudo-message marks */
	char		*xuidl;
	uint64_t	 octets;	/* sizes of the messages filed */
	int		 capped;	/* stopped at --max-messages/-bytes */
	XXH3_state_t	*long_fp;	/* LK_LONGFROM: its fingerprint so far */
	uint32_t	 long_fp_len;
	size_t		 tail_len;
	unsigned char	 tail[MBOX_FROM_TAIL];
	unsigned char	 head[MBOX_HEAD_MAX];
};

/* Does the line start with the header name (with its colon)? */
static int
hdr_is(const unsigned char *h, size_t n, const char *name)
{
	size_t len = strlen(name);

	return n >= len && strncasecmp((const char *)h, name, len) == 0;
}

/* The value of a header line after its name: leading and trailing white
 * space and the line end removed.  Returns its length. */
static size_t
hdr_value(const unsigned char *h, size_t n, size_t namelen,
    const unsigned char **v)
{
	size_t b = namelen;

	while (b < n && (h[b] == ' ' || h[b] == '\t'))
		b++;
	while (n > b && (h[n - 1] == '\n' || h[n - 1] == '\r' ||
	    h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	*v = h + b;
	return n - b;
}

/* A decimal number 1..UINT32_MAX at the start of v (up to a space).
 * Returns 0 when there is none. */
static uint32_t
parse_u32(const unsigned char *v, size_t n, int whole)
{
	uint64_t x = 0;
	size_t i;

	for (i = 0; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
		x = x * 10 + (uint64_t)(v[i] - '0');
		if (x > UINT32_MAX)
			return 0;
	}
	if (i == 0 || (whole && i != n) ||
	    (!whole && i < n && v[i] != ' ' && v[i] != '\t'))
		return 0;
	return (uint32_t)x;
}

/* Notes an X-UIDL: value if it is a valid unique-id (RFC 1939). */
static void
scan_xuidl(struct scan *sc, const unsigned char *v, size_t n, int complete)
{
	size_t i;

	if (sc->xuidl != NULL || !complete || n < 1 || n > POP3D_UIDL_MAX)
		return;
	for (i = 0; i < n; i++)
		if (v[i] < 0x21 || v[i] > 0x7e)
			return;
	sc->xuidl = xmalloc(n + 1);
	memcpy(sc->xuidl, v, n);
	sc->xuidl[n] = '\0';
}

/* The values our UIDL modes and the pseudo-message need. */
static void
scan_header_values(struct scan *sc, const unsigned char *h, size_t n,
    int complete)
{
	const unsigned char *v;
	size_t vn;

	if (hdr_is(h, n, "X-IMAP:") || hdr_is(h, n, "X-IMAPbase:")) {
		if (hdr_is(h, n, "X-IMAP:"))
			sc->ximap = 1;
		vn = hdr_value(h, n, h[6] == ':' ? 7 : 11, &v);
		if (sc->first && sc->mb->uidvalidity == 0) {
			size_t k = 0;

			sc->mb->uidvalidity = parse_u32(v, vn, 0);
			while (k < vn && v[k] >= '0' && v[k] <= '9')
				k++;
			while (k < vn && (v[k] == ' ' || v[k] == '\t'))
				k++;
			sc->mb->uidlast = parse_u32(v + k, vn - k, 0);
		}
	} else if (hdr_is(h, n, "Subject:")) {
		if (memmem(h, n, "FOLDER INTERNAL DATA", 20) != NULL)
			sc->folder = 1;
	} else if (sc->mb->mode == UIDL_XUIDL && hdr_is(h, n, "X-UIDL:")) {
		vn = hdr_value(h, n, 7, &v);
		scan_xuidl(sc, v, vn, complete);
	} else if (sc->mb->mode == UIDL_XUID && hdr_is(h, n, "X-UID:") &&
	    complete && !(sc->cur.flags & MSG_XUID)) {
		vn = hdr_value(h, n, 6, &v);
		if ((sc->cur.xuid = parse_u32(v, vn, 1)) != 0)
			sc->cur.flags |= MSG_XUID;
	}
}

/*
 * Decides whether a header line goes into the UIDL digest, as popa3d
 * (0.5.1 and later) does: the first Received:, every Delivered-To:, Date:
 * and Message-ID: while no Received: was seen, X-Delivery-ID: (capital
 * X only), and the continuation lines of those.
 */
static void
scan_header_line(struct scan *sc, const unsigned char *h, size_t n)
{
	switch (h[0]) {
	case ' ':
	case '\t':
		break;
	case 'R':
	case 'r':
		sc->fixed = !sc->received && hdr_is(h, n, "Received:");
		if (sc->fixed)
			sc->received = 1;
		break;
	case 'D':
	case 'd':
		sc->fixed = hdr_is(h, n, "Delivered-To:") ||
		    (!sc->received && hdr_is(h, n, "Date:"));
		break;
	case 'M':
	case 'm':
		sc->fixed = !sc->received && hdr_is(h, n, "Message-ID:");
		break;
	case 'X':
		sc->fixed = hdr_is(h, n, "X-Delivery-ID:");
		break;
	default:
		sc->fixed = 0;
		break;
	}
}

/*
 * Ends the current message at end (its separator excluded) and files it,
 * unless it is the hidden pseudo-message: the first in the file, with the
 * marks UW and Dovecot give it (X-IMAP:, "FOLDER INTERNAL DATA"), no
 * Received: header (a mail server wrote it, not a delivery), and only
 * where the state says that the maildrop began with one when pop3d first
 * saw it (pseudo_ok): a sender cannot plant one after a client emptied
 * the maildrop.
 */
static int
scan_finish(struct scan *sc, off_t end)
{
	struct mailbox *mb = sc->mb;
	struct msg *m = &sc->cur;
	uint8_t d[MD5_DIGEST_LENGTH];
	static const int order[8] = { 3, 2, 1, 0, 7, 6, 5, 4 };
	int i;

	m->end = end;
	MD5Final(d, &sc->uidl_ctx);
	for (i = 0; i < 8; i++)		/* popa3d prints them in this order */
		m->digest[i] = d[order[i]];
	m->fp = XXH3_64bits_digest(sc->fp_ctx);
	sc->in_msg = 0;
	if (sc->first && sc->ximap && sc->folder && !sc->received &&
	    mb->pseudo_ok) {
		mb->pseudo = 1;
		mb->pseudo_fp = m->fp;
		mb->pseudo_fp_len = m->fp_len;
		free(sc->xuidl);
		sc->xuidl = NULL;
		return 0;
	}
	if (mb->count == mb->max_messages || (mb->max_bytes != 0 &&
	    (m->size > mb->max_bytes || sc->octets > mb->max_bytes - m->size))) {
		/* Over a cap: serve the messages before this one and leave
		 * the rest like mail appended after the scan. */
		logmsg(LOG_NOTICE, "%s: over the limit of %u messages or %llu "
		    "octets: serving the first %u (%llu octets), the rest "
		    "stays for a later session", mb->path, mb->max_messages,
		    (unsigned long long)mb->max_bytes, mb->count,
		    (unsigned long long)sc->octets);
		mb->size = m->from;
		sc->capped = 1;
		sc->error = MB_OK;
		return -1;
	}
	sc->octets += m->size;
	if (mb->count == mb->alloc) {
		mb->alloc = mb->alloc ? mb->alloc * 2 : 64;
		mb->msgs = xreallocarray(mb->msgs, mb->alloc, sizeof(*mb->msgs));
		if (mb->mode == UIDL_XUIDL)
			mb->xuidl = xreallocarray(mb->xuidl, mb->alloc,
			    sizeof(*mb->xuidl));
	}
	if (mb->xuidl != NULL)
		mb->xuidl[mb->count] = sc->xuidl;
	else
		free(sc->xuidl);
	sc->xuidl = NULL;
	mb->msgs[mb->count++] = *m;
	return 0;
}

static void
scan_start(struct scan *sc)
{
	sc->first = sc->line_off == 0;
	memset(&sc->cur, 0, sizeof(sc->cur));
	sc->cur.from = sc->line_off;
	sc->in_msg = sc->in_header = sc->fp_open = 1;
	sc->fixed = sc->received = sc->ximap = sc->folder = 0;
	MD5Init(&sc->uidl_ctx);
	(void)XXH3_64bits_reset(sc->fp_ctx);
}

/* Octets of an LK_LONGFROM line: the fingerprint it gets if it is a
 * From_ line, and its last octets. */
static void
scan_long_bytes(struct scan *sc, const unsigned char *p, size_t n)
{
	size_t take = min_size(n, POP3D_BLOCK - sc->long_fp_len), keep;

	(void)XXH3_64bits_update(sc->long_fp, p, take);
	sc->long_fp_len += (uint32_t)take;
	if (n >= sizeof(sc->tail)) {
		memcpy(sc->tail, p + n - sizeof(sc->tail), sizeof(sc->tail));
		sc->tail_len = sizeof(sc->tail);
		return;
	}
	keep = min_size(sc->tail_len, sizeof(sc->tail) - n);
	memmove(sc->tail, sc->tail + sc->tail_len - keep, keep);
	memcpy(sc->tail + keep, p, n);
	sc->tail_len = keep + n;
}

/* Octets of the current line, in any number of fragments. */
static void
scan_bytes(struct scan *sc, const unsigned char *p, size_t n)
{
	if (n == 0)
		return;
	sc->line_len += n;
	if (n >= 2) {
		sc->last2[0] = p[n - 2];
		sc->last2[1] = p[n - 1];
	} else {
		sc->last2[0] = sc->last2[1];
		sc->last2[1] = p[0];
	}
	if (sc->fp_open && sc->cur.fp_len < POP3D_BLOCK) {
		size_t take = min_size(n, POP3D_BLOCK - sc->cur.fp_len);

		(void)XXH3_64bits_update(sc->fp_ctx, p, take);
		sc->cur.fp_len += (uint32_t)take;
	}
	if (sc->in_header && sc->kind == LK_TEXT && sc->fixed)
		MD5Update(&sc->uidl_ctx, p, n);
	if (sc->kind == LK_LONGFROM)
		scan_long_bytes(sc, p, n);
}

/* A "From " line after a blank line fills head[]: decided at its end. */
static void
scan_long_begin(struct scan *sc)
{
	sc->kind = LK_LONGFROM;
	if (sc->long_fp == NULL && (sc->long_fp = XXH3_createState()) == NULL)
		fatalx("out of memory");
	(void)XXH3_64bits_reset(sc->long_fp);
	sc->long_fp_len = 0;
	sc->tail_len = 0;
}

/*
 * The end of an LK_LONGFROM line: a From_ line when its last octets hold
 * a valid date (the partial token they start with is dropped: it is part
 * of the envelope sender, which may be anything).  A From_ line ends the
 * message before it, as in scan_line_begin, and starts one with the
 * fingerprint gathered along the line; anything else is text.
 * Returns 0, or -1 when the scan stops (a cap).
 */
static int
scan_long_end(struct scan *sc)
{
	unsigned char line[5 + MBOX_FROM_TAIL];
	size_t i = 0;

	while (i < sc->tail_len && sc->tail[i] != ' ' && sc->tail[i] != '\t')
		i++;
	memcpy(line, "From ", 5);
	memcpy(line + 5, sc->tail + i, sc->tail_len - i);
	if (!from_line_valid(line, 5 + sc->tail_len - i)) {
		sc->kind = LK_TEXT;
		if (sc->pending)
			sc->cur.size += 2;	/* it was content after all */
		sc->pending = 0;
		return 0;
	}
	sc->kind = LK_FROM;
	if (sc->in_msg && scan_finish(sc, sc->blank_off) < 0)
		return -1;
	sc->pending = 0;
	scan_start(sc);
	XXH3_copyState(sc->fp_ctx, sc->long_fp);
	sc->cur.fp_len = sc->long_fp_len;
	return 0;
}

/* Classifies the current line from head[]; complete: the whole line is
 * there.  Then feeds head[] as the line's first fragment. */
static int
scan_line_begin(struct scan *sc, int complete)
{
	const unsigned char *h = sc->head;
	size_t n = sc->head_len;

	sc->head_done = 1;
	if (sc->line_off == 0 && !(n >= 5 && memcmp(h, "From ", 5) == 0)) {
		logmsg(LOG_ERR, "%s: not an mbox file (no From_ line)",
		    sc->mb->path);
		sc->error = MB_PERM;
		return -1;
	}
	if (sc->boundary && (sc->line_off == 0 ||
	    (complete && from_line_valid(h, n))))
		sc->kind = LK_FROM;
	else if (sc->boundary && !complete && memcmp(h, "From ", 5) == 0)
		scan_long_begin(sc);
	else if ((n == 1 && h[0] == '\n') ||
	    (n == 2 && h[0] == '\r' && h[1] == '\n'))
		sc->kind = LK_BLANK;
	else
		sc->kind = LK_TEXT;

	if (sc->kind == LK_FROM) {
		if (sc->in_msg && scan_finish(sc, sc->blank_off) < 0)
			return -1;
		sc->pending = 0;
		scan_start(sc);
	} else if (sc->kind != LK_LONGFROM) {
		if (sc->pending)
			sc->cur.size += 2;	/* it was content after all */
		sc->pending = 0;
		if (sc->kind == LK_BLANK)
			sc->in_header = sc->fp_open = 0;
		else if (sc->in_header) {
			scan_header_line(sc, h, n);
			scan_header_values(sc, h, n, complete);
		}
	}
	scan_bytes(sc, h, n);
	return 0;
}

/* The current line ended (eol: with its LF; else at EOF).  Returns 0, or
 * -1 when the scan stops. */
static int
scan_line_end(struct scan *sc, int eol)
{
	struct msg *m = &sc->cur;

	if (sc->kind == LK_LONGFROM && scan_long_end(sc) < 0)
		return -1;
	switch (sc->kind) {
	case LK_FROM:
		m->data = sc->line_off + (off_t)sc->line_len;
		break;
	case LK_BLANK:
		sc->pending = 1;
		sc->blank_off = sc->line_off;
		break;
	default:
		m->size += sc->line_len;
		if (eol)
			m->size += (sc->line_len >= 2 && sc->last2[0] == '\r') ?
			    0 : 1;
		else
			m->size += sc->last2[1] == '\r' ? 1 : 2;
		break;
	}
	sc->boundary = sc->kind == LK_BLANK;
	sc->line_off += (off_t)sc->line_len;
	sc->line_len = 0;
	sc->head_len = 0;
	sc->head_done = 0;
	return 0;
}

/* One piece of a line: up to and including its LF when eol. */
static int
scan_frag(struct scan *sc, const unsigned char *p, size_t n, int eol)
{
	if (!sc->head_done) {
		size_t take = n < MBOX_HEAD_MAX - sc->head_len ? n :
		    MBOX_HEAD_MAX - sc->head_len;

		memcpy(sc->head + sc->head_len, p, take);
		sc->head_len += take;
		if (eol && take == n)
			return scan_line_begin(sc, 1) < 0 ? -1 :
			    scan_line_end(sc, 1);
		if (sc->head_len < MBOX_HEAD_MAX)
			return 0;
		if (scan_line_begin(sc, 0) < 0)
			return -1;
		p += take;
		n -= take;
	}
	scan_bytes(sc, p, n);
	return eol ? scan_line_end(sc, 1) : 0;
}

/*
 * The fast path for message bodies.  In a body, a line is plain content
 * (its octets, plus one when it ends in a bare LF) unless it is a blank
 * line followed by a line that may be a From_ line: that pair, and a
 * blank line whose successor is not in the buffer yet, are left to the
 * slow path.  mask64() gives, for 64 octets, a bit per octet equal to
 * LF, CR or 'F'; body_run() walks whole blocks of 64 with these masks and
 * leaves the rest to the line loop in scan_body_run().
 */
#ifdef __SSE2__
static inline __m128i
load16(const unsigned char *p)
{
	return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static inline uint64_t
mask16(const unsigned char *p, __m128i k)
{
	return (uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(load16(p), k));
}

/* Bit i: p[i] == k, for the 64 octets at p (no loops: -O2 would keep
 * them, and spill). */
static inline uint64_t
mask64(const unsigned char *p, char k)
{
	const __m128i K = _mm_set1_epi8(k);

	return mask16(p, K) | mask16(p + 16, K) << 16 |
	    mask16(p + 32, K) << 32 | mask16(p + 48, K) << 48;
}

/* Is k among the 64 octets at p? */
static inline int
has64(const unsigned char *p, char k)
{
	const __m128i K = _mm_set1_epi8(k);
	__m128i e = _mm_or_si128(
	    _mm_or_si128(_mm_cmpeq_epi8(load16(p), K),
	    _mm_cmpeq_epi8(load16(p + 16), K)),
	    _mm_or_si128(_mm_cmpeq_epi8(load16(p + 32), K),
	    _mm_cmpeq_epi8(load16(p + 48), K)));

	return _mm_movemask_epi8(e) != 0;
}
#else
static inline uint64_t
mask64(const unsigned char *p, char k)
{
	uint64_t m = 0;
	int i;

	for (i = 0; i < 64; i++)
		m |= (uint64_t)(p[i] == (unsigned char)k) << i;
	return m;
}

static inline int
has64(const unsigned char *p, char k)
{
	return memchr(p, k, 64) != NULL;
}
#endif

/* Whole blocks of 64 octets from p, which starts a body line, up to the
 * block holding the first blank line before an 'F' (or before the end of
 * the buffer).  Returns the octets up to the last LF passed; *bare gets
 * the number of LFs without a CR before them in there.  The x86-64
 * baseline has no POPCNT instruction; libgcc's stand-in took a fifth of
 * the scan, so there is a POPCNT clone, chosen at load time. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
__attribute__((target_clones("popcnt", "default")))
#endif
#endif
static size_t
body_run(const unsigned char *p, size_t len, uint64_t *bare)
{
	uint64_t sol_in = 1, cr_in = 0, crsol_in = 0;	/* from octet -1 */
	uint64_t nbare = 0, last = 0;	/* last: the LFs of block at */
	size_t base, at = 0;

	for (base = 0; len - base >= 64; base += 64) {
		const unsigned char *q = p + base;
		uint64_t lf = mask64(q, '\n'), cr = 0, sol, blank, lone;

		sol = lf << 1 | sol_in;			/* a line starts here */
		if (cr_in != 0 || has64(q, '\r')) {
			cr = mask64(q, '\r');
			blank = lf & (sol | (cr & sol) << 1 | crsol_in);
			lone = lf & ~(cr << 1 | cr_in);
		} else {				/* the usual case */
			blank = lf & sol;
			lone = lf;
		}
		if (blank != 0 && (blank & (mask64(q, 'F') >> 1 |
		    (uint64_t)(len - base == 64 || q[64] == 'F') << 63)) != 0)
			break;
		nbare += (uint64_t)__builtin_popcountll(lone);
		if (lf != 0) {
			last = lf;
			at = base;
		}
		sol_in = lf >> 63;
		cr_in = cr >> 63;
		crsol_in = (cr & sol) >> 63;
	}
	*bare = nbare;
	return last != 0 ? at + 64 - (size_t)__builtin_clzll(last) : 0;
}

/* At the start of a body line (not after a blank line), consumes the
 * lines that are plain content and adds them to the message size.
 * Returns the octets consumed. */
static size_t
scan_body_run(struct scan *sc, const unsigned char *p, size_t len)
{
	const unsigned char *s, *e = p + len, *lf;
	uint64_t size;

	if (!sc->in_msg || sc->in_header || sc->boundary || sc->fp_open ||
	    sc->head_len != 0 || sc->line_len != 0)
		return 0;
	s = p + body_run(p, len, &size);
	size += (uint64_t)(s - p);
	while ((lf = memchr(s, '\n', (size_t)(e - s))) != NULL) {
		size_t n = (size_t)(lf - s) + 1;
		int blank = n == 1 || (n == 2 && s[0] == '\r');

		if (blank && (lf + 1 == e || lf[1] == 'F'))
			break;		/* maybe a separator: the slow path */
		size += n + (n >= 2 && lf[-1] == '\r' ? 0 : 1);
		s = lf + 1;
	}
	sc->cur.size += size;
	sc->line_off += (off_t)(s - p);
	return (size_t)(s - p);
}

static int
scan_block(struct scan *sc, const unsigned char *p, size_t len)
{
	while (len > 0) {
		size_t skip = scan_body_run(sc, p, len), n;
		const unsigned char *lf;

		p += skip;
		len -= skip;
		if (len == 0)
			break;
		lf = memchr(p, '\n', len);
		n = lf != NULL ? (size_t)(lf - p) + 1 : len;
		if (scan_frag(sc, p, n, lf != NULL) < 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* End of file: a last line without LF, then the last message. */
static int
scan_eof(struct scan *sc)
{
	if (sc->head_len > 0 && !sc->head_done &&
	    scan_line_begin(sc, 1) < 0)
		return -1;
	if (sc->head_done && scan_line_end(sc, 0) < 0)
		return -1;
	if (sc->in_msg)
		return scan_finish(sc, sc->pending ? sc->blank_off :
		    sc->line_off);
	return 0;
}

/*
 * Scans the locked file from start up to mb->size.  start is 0, or the
 * From_ line after the messages already in mb->msgs (from the scan
 * cache), preceded by a blank line: the scanner is then in the state a
 * full scan has there, minus the previous message, already filed
 * (octets: their sizes).  Returns MB_OK, MB_PERM or MB_TEMP.
 */
static int
mailbox_scan(struct mailbox *mb, off_t start, uint64_t octets)
{
	struct scan *sc = xmalloc(sizeof(*sc));
	off_t off = start;
	int r = MB_OK;

	memset(sc, 0, sizeof(*sc));
	if ((sc->fp_ctx = XXH3_createState()) == NULL)
		fatalx("out of memory");
	sc->mb = mb;
	sc->boundary = 1;
	sc->line_off = start;
	sc->octets = octets;
	mb->scanned = (uint64_t)(mb->size - start);
	while (off < mb->size && r == MB_OK) {
		size_t want = min_size(POP3D_BLOCK, (uint64_t)(mb->size - off));
		ssize_t n = read_at(mb->fd, mb->buf, want, off);

		if (n < 0 || (size_t)n != want) {
			logmsg(LOG_ERR, "%s: read: %s", mb->path,
			    n < 0 ? strerror(errno) : "file shrank");
			r = MB_TEMP;
		} else if (scan_block(sc, mb->buf, want) < 0)
			r = sc->error;
		off += (off_t)want;
	}
	if (r == MB_OK && !sc->capped && scan_eof(sc) < 0)
		r = sc->error;
	mb->capped = sc->capped;
	free(sc->xuidl);
	XXH3_freeState(sc->fp_ctx);
	if (sc->long_fp != NULL)
		XXH3_freeState(sc->long_fp);
	free(sc);
	return r;
}

/* Digest of the last octets scanned: appended mail must keep them. */
static int
mailbox_tail(struct mailbox *mb)
{
	mb->tail_len = (uint32_t)min_size(MBOX_TAIL_MAX, (uint64_t)mb->size);
	if (mb->tail_len == 0)
		return MB_OK;
	if (digest_at(mb, mb->size - mb->tail_len, mb->tail_len,
	    &mb->tail_fp) < 0) {
		logmsg(LOG_ERR, "%s: read: %s", mb->path, strerror(errno));
		return MB_TEMP;
	}
	return MB_OK;
}

/* ---- UIDL ----------------------------------------------------------- */

/*
 * X-UID ids follow a template in the syntax of Dovecot's pop3_uidl_format,
 * so that a site writes what its old server was configured with: %u the
 * X-UID, %v the UIDVALIDITY, %% a percent sign, other characters as they
 * are.  Between the % and the letter, as Dovecot reads them: a 0 and a
 * width pad with zeros to that width; a width alone cuts the value to
 * that many characters; modifiers in order: X hexadecimal (lowercase), U
 * and L upper and lower case (only hex digits have a case).  Dovecot's
 * other variables (%m, %f, %g) come from its index, not from the file.
 */
struct uidl_var {
	int		 c;		/* 'u', 'v', '%'; 0: not supported */
	unsigned	 width;
	int		 zero, hex, upper;
};

/* Parses the variable after a '%' at *p and moves *p past it. */
static void
uidl_var_parse(const char **p, struct uidl_var *v)
{
	const char *s = *p;

	memset(v, 0, sizeof(*v));
	if (*s == '%') {
		v->c = '%';
		*p = s + 1;
		return;
	}
	if (*s == '0') {
		v->zero = 1;
		s++;
	}
	for (; *s >= '0' && *s <= '9'; s++) {
		v->width = v->width * 10 + (unsigned)(*s - '0');
		if (v->width > POP3D_UIDL_MAX)
			return;
	}
	for (;; s++) {
		if (*s == 'X' && !v->hex)
			v->hex = 1;
		else if (*s == 'U')
			v->upper = v->hex;
		else if (*s == 'L')
			v->upper = 0;
		else
			break;
	}
	if (*s == 'u' || *s == 'v') {
		v->c = *s == 'u' ? 'u' : 'v';
		*p = s + 1;
	}
}

/* Writes variable v with value x at buf; returns its length (at most
 * POP3D_UIDL_MAX). */
static size_t
uidl_var_put(const struct uidl_var *v, uint32_t x, char *buf)
{
	static const char lower[] = "0123456789abcdef";
	static const char upper[] = "0123456789ABCDEF";
	const char *digits = v->upper ? upper : lower;
	unsigned base = v->hex ? 16 : 10;
	char num[16];
	size_t n = 0, pad = 0, len, k;

	do {				/* least significant first */
		num[n++] = digits[x % base];
		x /= base;
	} while (x != 0);
	len = n;
	if (v->zero && v->width > n)
		pad = v->width - n;
	else if (!v->zero && v->width > 0 && v->width < n)
		len = v->width;		/* Dovecot keeps the leading digits */
	memset(buf, '0', pad);
	for (k = 0; k < len; k++)
		buf[pad + k] = num[n - 1 - k];
	return pad + len;
}

/* The id of a message with X-UID uid under uidvalidity, as template fmt
 * (checked) gives it.  Returns its length. */
static size_t
uidl_xuid(const char *fmt, uint32_t uid, uint32_t uidvalidity, char *buf)
{
	struct uidl_var v;
	size_t n = 0;

	while (*fmt != '\0') {
		if (n >= POP3D_UIDL_MAX)
			fatalx("uidl format too long");	/* not checked */
		if (*fmt != '%') {
			buf[n++] = *fmt++;
			continue;
		}
		fmt++;
		uidl_var_parse(&fmt, &v);
		if (v.c == '%')
			buf[n++] = '%';
		else if (v.c != 0 && n + (v.width > 10 ? v.width : 10) <=
		    POP3D_UIDL_MAX)
			n += uidl_var_put(&v, v.c == 'u' ? uid : uidvalidity,
			    buf + n);
		else
			fatalx("uidl format not checked");
	}
	buf[n] = '\0';
	return n;
}

int
mailbox_uidl_format_check(const char *fmt)
{
	struct uidl_var v;
	size_t most = 0;
	int uid = 0;

	while (*fmt != '\0') {
		if (*fmt != '%') {
			if (*fmt < 0x21 || *fmt > 0x7e)
				return -1;	/* no space or control */
			fmt++;
			most++;
			continue;
		}
		fmt++;
		uidl_var_parse(&fmt, &v);
		if (v.c == 0)
			return -1;
		uid |= v.c == 'u';
		if (v.c == '%')
			most++;
		else if (v.zero)
			most += v.width > 10 ? v.width : 10;
		else
			most += v.width > 0 && v.width < 10 ? v.width : 10;
	}
	/* Without %u every message would get the same id. */
	return uid && most <= POP3D_UIDL_MAX ? 0 : -1;
}

/* The id of message i before duplicates are told apart. */
static size_t
uidl_base(const struct mailbox *mb, unsigned i, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	const struct msg *m = &mb->msgs[i];
	size_t k;

	if (mb->xuidl != NULL && mb->xuidl[i] != NULL) {
		k = strlen(mb->xuidl[i]);
		memcpy(buf, mb->xuidl[i], k + 1);
		return k;
	}
	if (mb->mode == UIDL_XUID && (m->flags & MSG_XUID) &&
	    mb->uidvalidity != 0)
		return uidl_xuid(mb->uidl_format, m->xuid, mb->uidvalidity,
		    buf);
	for (k = 0; k < 8; k++) {
		buf[2 * k] = hex[m->digest[k] >> 4];
		buf[2 * k + 1] = hex[m->digest[k] & 15];
	}
	buf[16] = '\0';
	return 16;
}

/* The id of message i with duplicate suffix sfx (0: none); the base is
 * cut so that the whole stays within POP3D_UIDL_MAX. */
static size_t
uidl_render(const struct mailbox *mb, unsigned i, uint32_t sfx, char *buf)
{
	char tail[16];
	size_t n = uidl_base(mb, i, buf);
	int t;

	if (sfx == 0)
		return n;
	t = snprintf(tail, sizeof(tail), "-%u", (unsigned)sfx);
	if (t < 0 || (size_t)t >= sizeof(tail))
		fatalx("uidl suffix");
	if (n + (size_t)t > POP3D_UIDL_MAX)
		n = POP3D_UIDL_MAX - (size_t)t;
	memcpy(buf + n, tail, (size_t)t + 1);
	return n + (size_t)t;
}

/*
 * Open-addressing set of rendered ids, for telling duplicates apart.  It
 * lives only while the ids are made unique, but at 16 octets a slot it
 * was the session's peak memory on big maildrops: a slot is now 4, the
 * message index + 1 (0: empty) in the low UID_IDX_BITS and the top bits
 * of the id's hash as a tag, which spares most renderings on a collision
 * (from 2^24 messages on, the slot number takes the tag's lowest hash bit
 * too: more renderings, never a wrong answer, as ids are compared whole).  A
 * slot's id is that of its message with the message's suffix.
 */
#define UID_IDX_BITS	25
#define UID_IDX_MASK	((1U << UID_IDX_BITS) - 1)

_Static_assert(MBOX_MAX_MESSAGES_OPT < UID_IDX_MASK,
    "a message index + 1 fits a slot");

struct uid_set {
	uint32_t	*slot;
	uint32_t	*next;		/* per slot: next suffix to try, or NULL */
	size_t		 mask;
};

static uint32_t
uid_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	while (n-- > 0)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static uint32_t
uid_tag(uint32_t h)
{
	return h & ~UID_IDX_MASK;
}

/* Finds the slot of id s (or the empty slot where it belongs). */
static size_t
uid_find(const struct mailbox *mb, const struct uid_set *set, const char *s,
    size_t n, uint32_t h)
{
	char other[POP3D_UIDL_MAX + 1];
	size_t i = h & set->mask;

	for (;; i = (i + 1) & set->mask) {
		uint32_t v = set->slot[i];
		unsigned k = (v & UID_IDX_MASK) - 1;

		if (v == 0)
			return i;
		if ((v & ~UID_IDX_MASK) == uid_tag(h) &&
		    uidl_render(mb, k, mb->msgs[k].suffix, other) == n &&
		    memcmp(other, s, n) == 0)
			return i;
	}
}

/*
 * Drops the X-UID values that UW and Dovecot would not take either (they
 * give such a message a new UID and rewrite the header): one not above
 * the last valid one before it, or above the folder's last UID.  Such
 * values come from senders, in mail delivered after the old server last
 * ran; those messages get the digest instead, which no later deletion
 * changes (a copied X-UID would get a suffix that one could).
 */
static void
uidl_xuid_order(struct mailbox *mb)
{
	uint32_t last = 0;
	unsigned i;

	for (i = 0; i < mb->count; i++) {
		struct msg *m = &mb->msgs[i];

		if (!(m->flags & MSG_XUID))
			continue;
		if (m->xuid <= last ||
		    (mb->uidlast != 0 && m->xuid > mb->uidlast))
			m->flags &= ~(uint32_t)MSG_XUID;
		else
			last = m->xuid;
	}
}

/*
 * Makes every id unique: the first message with an id keeps it, later
 * ones get "-2", "-3", ... in file order, skipping any id that another
 * message has or got.
 */
static void
mailbox_uidl_unique(struct mailbox *mb)
{
	char id[POP3D_UIDL_MAX + 1];
	struct uid_set set;
	size_t slots = 16, n, at;
	unsigned i, dups = 0;

	if (mb->mode == UIDL_XUID)
		uidl_xuid_order(mb);
	while (slots < 2 * ((size_t)mb->count + 1))
		slots *= 2;
	set.slot = xreallocarray(NULL, slots, sizeof(*set.slot));
	memset(set.slot, 0, slots * sizeof(*set.slot));
	set.next = NULL;
	set.mask = slots - 1;
	for (i = 0; i < mb->count; i++) {
		uint32_t h;

		n = uidl_render(mb, i, 0, id);
		h = uid_hash(id, n);
		at = uid_find(mb, &set, id, n, h);
		if (set.slot[at] != 0) {
			mb->msgs[i].suffix = UINT32_MAX;	/* to do */
			dups++;
			continue;
		}
		set.slot[at] = uid_tag(h) | (i + 1);
	}
	if (dups > 0) {
		set.next = xreallocarray(NULL, slots, sizeof(*set.next));
		memset(set.next, 0, slots * sizeof(*set.next));
	}
	for (i = 0; dups > 0 && i < mb->count; i++) {
		size_t base;
		uint32_t k;

		if (mb->msgs[i].suffix != UINT32_MAX)
			continue;
		n = uidl_render(mb, i, 0, id);
		base = uid_find(mb, &set, id, n, uid_hash(id, n));
		for (k = set.next[base] ? set.next[base] : 2;; k++) {
			uint32_t h;

			n = uidl_render(mb, i, k, id);
			h = uid_hash(id, n);
			at = uid_find(mb, &set, id, n, h);
			if (set.slot[at] == 0) {
				mb->msgs[i].suffix = k;
				set.slot[at] = uid_tag(h) | (i + 1);
				break;
			}
		}
		set.next[base] = k + 1;
	}
	free(set.next);
	free(set.slot);
}

void
mailbox_uidl(const struct mailbox *mb, unsigned n,
    char buf[POP3D_UIDL_MAX + 1])
{
	uidl_render(mb, n - 1, mb->msgs[n - 1].suffix, buf);
}

/* ---- locking -------------------------------------------------------- */

static void
lock_fcntl_release(struct mailbox *mb)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(mb->fd, F_SETLK, &fl) < 0)
		logmsg(LOG_ERR, "%s: fcntl unlock: %s", mb->path,
		    strerror(errno));
}

/* One attempt at both locks, never waiting.  Returns 1 locked, 0 busy
 * (nothing held), -1 error (nothing held). */
static int
lock_try(struct mailbox *mb)
{
	struct flock fl;
	int r;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(mb->fd, F_SETLK, &fl) < 0) {
		if (errno == EAGAIN || errno == EACCES || errno == EINTR)
			return 0;
		logmsg(LOG_ERR, "%s: fcntl lock: %s", mb->path,
		    strerror(errno));
		return -1;
	}
	r = lockfile_create(mb->lockpath, 0, L_PID);
	if (r == L_SUCCESS)
		return 1;
	lock_fcntl_release(mb);
	if (r == L_MAXTRYS)
		return 0;
	logmsg(LOG_ERR, "%s: cannot create the dotlock (liblockfile %d): %s",
	    mb->lockpath, r, strerror(errno));
	return -1;
}

static long
ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t0->tv_sec) * 1000 +
	    (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Takes the fcntl lock and the dotlock without ever waiting for one while
 * holding the other (procmail and Postfix take them in opposite orders):
 * when either is busy both are released and we back off a random short
 * time, for at most lock_timeout seconds.  Returns MB_OK or MB_TEMP.
 */
static int
mailbox_lock(struct mailbox *mb)
{
	struct timespec t0;
	long limit = (long)mb->lock_timeout * 1000;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int r = lock_try(mb);

		if (r > 0) {
			mb->locked = 1;
			return MB_OK;
		}
		if (r < 0)
			return MB_TEMP;
		if (ms_since(&t0) >= limit) {
			logmsg(LOG_NOTICE, "%s: still locked after %d s",
			    mb->path, mb->lock_timeout);
			return MB_LOCKED;
		}
		sleep_ms(POP3D_LOCK_BACKOFF_MIN + (long)arc4random_uniform(
		    POP3D_LOCK_BACKOFF_MAX - POP3D_LOCK_BACKOFF_MIN + 1));
	}
}

static void
mailbox_unlock(struct mailbox *mb)
{
	if (!mb->locked)
		return;
	if (lockfile_remove(mb->lockpath) < 0)
		logmsg(LOG_ERR, "%s: cannot remove the dotlock: %s",
		    mb->lockpath, strerror(errno));
	lock_fcntl_release(mb);
	mb->locked = 0;
}

/*
 * Waits, still holding the locks, until the clock is past the mtime
 * scanned, so that the next write by anyone gives a different mtime; at
 * most ms milliseconds.  Returns whether it is past.  File times come
 * from the coarse clock; an mtime with zero nanoseconds suggests a
 * filesystem with whole seconds.
 */
static int
mailbox_settle(const struct mailbox *mb, long ms)
{
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > mb->mtime.tv_sec ||
		    (now.tv_sec == mb->mtime.tv_sec && mb->mtime.tv_nsec != 0 &&
		    now.tv_nsec > mb->mtime.tv_nsec))
			return 1;
		if (ms_since(&t0) >= ms)
			return 0;
		sleep_ms(1);
	}
}

/* ---- change detection ----------------------------------------------- */

/* Is the fingerprint of a message (or the pseudo-message) unchanged? */
static int
fp_ok(struct mailbox *mb, off_t from, uint32_t len, uint64_t fp)
{
	uint64_t v;

	return digest_at(mb, from, len, &v) == 0 && v == fp;
}

/*
 * Checks that the file is the one scanned, changed at most by appending.
 * which: a message index to verify, or -1 for every message.  *cur gets
 * the current size.  Returns MB_OK, MB_CHANGED or MB_TEMP.
 */
static int
mailbox_verify(struct mailbox *mb, long which, off_t *cur)
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
	if (mb->tail_len > 0 && !fp_ok(mb, mb->size - mb->tail_len,
	    mb->tail_len, mb->tail_fp))
		goto changed;
	if (which >= 0) {
		const struct msg *m = &mb->msgs[which];

		if (!fp_ok(mb, m->from, m->fp_len, m->fp))
			goto changed;
		return MB_OK;
	}
	if (mb->pseudo && !fp_ok(mb, 0, mb->pseudo_fp_len, mb->pseudo_fp))
		goto changed;
	for (i = 0; i < mb->count; i++)
		if (!fp_ok(mb, mb->msgs[i].from, mb->msgs[i].fp_len,
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
	return mailbox_verify(mb, n == 0 ? -1 : (long)n - 1, &cur);
}

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
 * (mailbox_verify(mb, -1)), and RETR/TOP check the message they send.
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
static void
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
	h.dev = (uint64_t)mb->dev;
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
	return from_line_valid(mb->buf, (size_t)(lf - mb->buf) + 1);
}

/*
 * Loads the cache into mb (messages, pseudo-message, UIDVALIDITY) if it
 * holds for the file st.  Returns NULL with *resume (where to scan from),
 * *octets (the sizes loaded) and *unchanged (the file has the cached
 * size) set, or why not ("" for no cache: nothing to say).
 */
static const char *
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
	if (h.dev != (uint64_t)st->st_dev || h.ino != (uint64_t)st->st_ino)
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
	else if (!fp_ok(mb, (off_t)(h.size - h.tail_len),
	    (uint32_t)h.tail_len, h.tail_fp))
		why = "the old end differs";
	else if (h.pseudo && !mb->pseudo_ok)
		why = "the pseudo-message is no longer trusted";
	else if (h.pseudo && !fp_ok(mb, 0, (uint32_t)h.pseudo_fp_len,
	    h.pseudo_fp))
		why = "the pseudo-message differs";
	for (i = 0; why == NULL && i < MBOX_CACHE_SPOT; i++) {
		/* 0, n - 1 and evenly between */
		size_t k = i == MBOX_CACHE_SPOT - 1 ? n - 1 :
		    i * n / MBOX_CACHE_SPOT;

		if (!fp_ok(mb, m[k].from, m[k].fp_len, m[k].fp))
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

static int	journal_recover(struct mailbox *, struct stat *);

/* Takes st as the file scanned: what change detection compares with. */
static void
mailbox_snapshot(struct mailbox *mb, const struct stat *st)
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
mailbox_load(struct mailbox *mb, uid_t owner)
{
	struct stat st, lst;
	off_t start = 0;		/* where the scan starts */
	uint64_t octets = 0;
	int r, unchanged = 0;		/* the cache is up to date */

	if ((r = mailbox_lock(mb)) != MB_OK)
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
		r = journal_recover(mb, &st);	/* an interrupted UPDATE */
	if (r == MB_OK) {
		const char *why = cache_load(mb, &st, &start, &octets,
		    &unchanged);

		if (why != NULL && why[0] != '\0')
			logmsg(LOG_INFO, "%s: scan cache not used: %s",
			    mb->path, why);
		mailbox_snapshot(mb, &st);
		r = mailbox_scan(mb, start, octets);
	}
	if (r == MB_OK)
		r = mailbox_tail(mb);
	if (r == MB_OK && !unchanged)
		cache_write(mb);
	if (r == MB_OK)
		(void)mailbox_settle(mb, MBOX_SETTLE_MS);
	mailbox_unlock(mb);
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
		mailbox_snapshot(mb, &st);
		r = MB_OK;
	} else
		r = mailbox_load(mb, o->owner);
	if (r != MB_OK) {
		mailbox_close(mb);
		return r;
	}
	mailbox_uidl_unique(mb);
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
		mailbox_unlock(mb);
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

void
mailbox_emit_init(struct emit *em)
{
	em->bol = 1;
	em->cr = 0;
}

void
mailbox_emit(struct out *out, const unsigned char *p, size_t len,
    struct emit *em)
{
	while (len > 0) {
		const unsigned char *lf;
		size_t n;

		if (em->bol && p[0] == '.')
			out_write(out, ".", 1);
		lf = memchr(p, '\n', len);
		n = lf != NULL ? (size_t)(lf - p) : len;
		if (n > 0) {
			out_write(out, p, n);
			em->cr = p[n - 1] == '\r';
			em->bol = 0;
		}
		if (lf == NULL)
			break;
		/* a stored CRLF stays one CRLF */
		out_write(out, em->cr ? "\n" : "\r\n", em->cr ? 1 : 2);
		em->bol = 1;
		em->cr = 0;
		p += n + 1;
		len -= n + 1;
	}
}

void
mailbox_emit_end(struct out *out, struct emit *em)
{
	if (!em->bol)
		out_write(out, em->cr ? "\n" : "\r\n", em->cr ? 1 : 2);
	out_write(out, ".\r\n", 3);
	mailbox_emit_init(em);
}

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
	mailbox_emit_init(&em);
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
		mailbox_emit(out, mb->buf, len, &em);
		if (out->error)
			return MB_CLIENT;
	}
	/* a rewrite during the reads must not end in a complete message */
	if ((r = mailbox_verify(mb, (long)n - 1, &cur)) != MB_OK)
		return r;
	mailbox_emit_end(out, &em);
	return out->error ? MB_CLIENT : MB_OK;
}

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

/* Alignment of the journal's parts. */
#define JR_ALIGN		4096

static const char jr_hdr_magic[8] = "pop3dJ1";
static const char jr_rec_magic[8] = "pop3dR1";

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

/* A record, followed by len octets of data. */
struct jrec {
	char		 magic[8];
	unsigned char	 hsum[MD5_DIGEST_LENGTH]; /* its header's sum */
	uint64_t	 seq;
	uint64_t	 pos, len;
	uint64_t	 gen;		/* 0: the header's plan, else this one: */
	uint64_t	 base;		/*   keep [0, base), then [ext, old) */
	uint64_t	 ext, old, tail_len;
	unsigned char	 tail[MD5_DIGEST_LENGTH];
	unsigned char	 sum[MD5_DIGEST_LENGTH]; /* record (sum 0) + data */
};

struct jrun {
	uint64_t	 src, len;
};

struct plan {
	struct jrun	*run;
	uint64_t	*dst;
	size_t		 n, alloc;
	uint64_t	 old, final, gen;
	uint64_t	 tail_len;
	unsigned char	 tail[MD5_DIGEST_LENGTH];
};

/* One update, or one recovery. */
struct upd {
	struct mailbox	*mb;
	int		 jfd;		/* -1: no journal */
	struct plan	 p;
	unsigned char	 hsum[MD5_DIGEST_LENGTH];
	off_t		 slot0;		/* offset of record slot 0 */
	uint64_t	 slotsz, slotcap;
	uint64_t	 seq;		/* of the last record written */
	uint64_t	 redo;		/* D */
	int		 written;	/* a mailbox octet may have changed */
	int		 dirty;		/* written since the last fsync */
	unsigned char	*buf;		/* one chunk */
	unsigned	 records;
	uint64_t	 journaled;	/* data octets in records */
};

static uint64_t
round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static void
upd_init(struct upd *u, struct mailbox *mb, int jfd)
{
	memset(u, 0, sizeof(*u));
	u->mb = mb;
	u->jfd = jfd;
	u->buf = xmalloc(MBOX_UPDATE_CHUNK);
}

static void
upd_free(struct upd *u)
{
	free(u->p.run);
	free(u->p.dst);
	free(u->buf);
}

/* Appends a kept run, merged with the previous one when adjacent. */
static void
plan_add(struct plan *p, uint64_t src, uint64_t len)
{
	if (len == 0)
		return;
	if (p->n > 0 && p->run[p->n - 1].src + p->run[p->n - 1].len == src) {
		p->run[p->n - 1].len += len;
		return;
	}
	if (p->n == p->alloc) {
		p->alloc = p->alloc ? p->alloc * 2 : 16;
		p->run = xreallocarray(p->run, p->alloc, sizeof(*p->run));
	}
	p->run[p->n].src = src;
	p->run[p->n].len = len;
	p->n++;
}

/* Computes dst[] and final.  Returns 0, or -1 if the runs are not in
 * order within [0, old). */
static int
plan_seal(struct plan *p)
{
	uint64_t d = 0, end = 0;
	size_t i;

	free(p->dst);
	p->dst = xreallocarray(NULL, p->n ? p->n : 1, sizeof(*p->dst));
	for (i = 0; i < p->n; i++) {
		if (p->run[i].src < end || p->run[i].len == 0 ||
		    p->run[i].len > p->old - p->run[i].src ||
		    p->run[i].src > p->old)
			return -1;
		end = p->run[i].src + p->run[i].len;
		p->dst[i] = d;
		d += p->run[i].len;
	}
	p->final = d;
	return 0;
}

/* The run holding output octet x < final. */
static size_t
plan_index(const struct plan *p, uint64_t x)
{
	size_t lo = 0, hi = p->n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->dst[mid] <= x)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* src(x); old for x >= final. */
static uint64_t
plan_src(const struct plan *p, uint64_t x)
{
	size_t i;

	if (x >= p->final)
		return p->old;
	i = plan_index(p, x);
	return p->run[i].src + (x - p->dst[i]);
}

/* The first output octet that moves; final when none does. */
static uint64_t
plan_start(const struct plan *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		if (p->run[i].src != p->dst[i])
			return p->dst[i];
	return p->final;
}

/* The digest of the octets [old - tail_len, old), which no write of the
 * plan touches: they tell an uncut file from a cut one. */
static int
plan_tail(struct mailbox *mb, const struct plan *p, unsigned char *d)
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

static void
plan_set_tail_len(struct plan *p)
{
	uint64_t gone = p->old - p->final;

	p->tail_len = gone < MBOX_TAIL_MAX ? gone : MBOX_TAIL_MAX;
}

/* Reads output [x, x + c) from the old octets into u->buf. */
static int
plan_fill(struct upd *u, uint64_t x, uint64_t c)
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
mailbox_overwrite(struct upd *u, uint64_t dst, const unsigned char *buf,
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
mb_sync(struct upd *u)
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
mb_sync_read(struct upd *u)
{
	u->dirty = 1;
	return mb_sync(u);
}

static int
jr_sync(struct upd *u)
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
static int
journal_clear(struct upd *u)
{
	if (ftruncate(u->jfd, 0) < 0) {
		logmsg(LOG_ERR, "%s: journal ftruncate: %s", u->mb->path,
		    strerror(errno));
		return -1;
	}
	return jr_sync(u);
}

/*
 * The checksum of a record and its data: XXH3's 128 bits, not MD5, since
 * it covers every journalled octet (all of a 600 MB mailbox when the
 * oldest message is deleted) and only has to tell a torn or stale record
 * from a whole one.  MD5 took two thirds of such an UPDATE.
 */
static void
jr_sum(const struct jrec *r, const unsigned char *data,
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
static int
jr_write(struct upd *u, uint64_t pos, uint64_t len)
{
	struct jrec r;
	off_t at = u->slot0 + (off_t)(((u->seq + 1) & 1) * u->slotsz);

	memset(&r, 0, sizeof(r));
	memcpy(r.magic, jr_rec_magic, sizeof(r.magic));
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
	jr_sum(&r, u->buf, r.sum);
	if ((len > 0 && write_at(u->jfd, u->buf, (size_t)len,
	    at + (off_t)sizeof(r)) < 0) ||
	    write_at(u->jfd, (const unsigned char *)&r, sizeof(r), at) < 0) {
		logmsg(LOG_ERR, "%s: journal write: %s", u->mb->path,
		    strerror(errno));
		return -1;
	}
	if (jr_sync(u) < 0)
		return -1;
	u->seq++;
	u->records++;
	u->journaled += len;
	return 0;
}

/* The layout after the header: where the slots are. */
static void
jr_layout(struct upd *u)
{
	u->slot0 = (off_t)round_up(sizeof(struct jhdr) +
	    u->p.n * sizeof(struct jrun), JR_ALIGN);
	u->slotsz = round_up(sizeof(struct jrec) + u->slotcap, JR_ALIGN);
}

static void
jr_hdr_sum(const struct jhdr *h, const struct plan *p,
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

/*
 * Writes the header and the runs, reserves both record slots and syncs,
 * before the first mailbox write.  Returns 0, or -1 with the journal
 * emptied again (or left alone if it was not empty to begin with).
 */
static int
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
	jr_layout(u);
	if (plan_tail(mb, p, p->tail) < 0) {
		logmsg(LOG_ERR, "%s: read: %s", mb->path, strerror(errno));
		return -1;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, jr_hdr_magic, sizeof(h.magic));
	h.dev = (uint64_t)mb->dev;
	h.ino = (uint64_t)mb->ino;
	h.old = p->old;
	h.final = p->final;
	h.nruns = p->n;
	h.slotcap = u->slotcap;
	h.tail_len = p->tail_len;
	memcpy(h.tail, p->tail, sizeof(h.tail));
	jr_hdr_sum(&h, p, h.sum);
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
	if (jr_sync(u) < 0) {
		(void)journal_clear(u);
		return -1;
	}
	return 0;
}

/* Writes output [x, final) of the plan, with records as the rules at the
 * top of this section say.  Returns 0 or -1. */
static int
plan_run(struct upd *u, uint64_t x)
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
		if (plan_fill(u, x, c) < 0)
			return -1;
		if (u->jfd >= 0 && x + c > plan_src(p, u->redo)) {
			data = x + c > sx;
			if ((u->redo != x || data) &&
			    (mb_sync(u) < 0 || jr_write(u, x, data ? c : 0) < 0))
				return -1;
			u->redo = data ? x + c : x;
		}
		if (mailbox_overwrite(u, x, u->buf, c) < 0)
			return -1;
		x += c;
	}
	return 0;
}

/* After the last chunk: the record D = final, the cut, the sync. */
static int
plan_finish(struct upd *u)
{
	struct mailbox *mb = u->mb;

	if (u->jfd >= 0 && (mb_sync(u) < 0 || (u->redo != u->p.final &&
	    jr_write(u, u->p.final, 0) < 0)))
		return -1;
	u->redo = u->p.final;
	u->written = u->dirty = 1;
	if (ftruncate(mb->fd, (off_t)u->p.final) < 0) {
		logmsg(LOG_ERR, "%s: ftruncate: %s", mb->path, strerror(errno));
		return -1;
	}
	return mb_sync(u);
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
static int
mailbox_compact(struct mailbox *mb, off_t cur)
{
	struct upd u;
	struct plan *p = &u.p;
	unsigned i;
	int r = MB_OK;

	upd_init(&u, mb, mb->journal_fd);
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
	if (u.jfd >= 0 && (mb_sync_read(&u) < 0 || journal_begin(&u) < 0))
		r = MB_TEMP;
	else if (plan_run(&u, u.redo) < 0 || plan_finish(&u) < 0) {
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
	upd_free(&u);
	return r;
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
		if (hdr_is(p, (size_t)(e - p), "X-IMAP"))
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
static void
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
	    mailbox_tail(mb) != MB_OK)
		return;
	mb->mtime = st.st_mtim;
	if (mailbox_settle(mb, MBOX_SETTLE_QUIT_MS))
		cache_write(mb);
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
	if ((r = mailbox_lock(mb)) != MB_OK)
		return r;
	r = mailbox_verify(mb, -1, &cur);
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
		r = mailbox_compact(mb, cur);
		sigprocmask(SIG_SETMASK, &old, NULL);
	}
	if (r == MB_OK)
		cache_after_update(mb);
	mailbox_unlock(mb);
	return r;
}

/* ---- recovery ------------------------------------------------------- */

/* Reads and checks record slot k.  Returns 1 (valid, data in u->buf),
 * 0 (not a valid record of this journal). */
static int
jr_read(struct upd *u, int k, struct jrec *r)
{
	off_t at = u->slot0 + (off_t)((uint64_t)k * u->slotsz);
	unsigned char d[MD5_DIGEST_LENGTH];
	ssize_t n = read_at(u->jfd, (unsigned char *)r, sizeof(*r), at);

	if (n != (ssize_t)sizeof(*r) ||
	    memcmp(r->magic, jr_rec_magic, sizeof(r->magic)) != 0 ||
	    memcmp(r->hsum, u->hsum, sizeof(r->hsum)) != 0 ||
	    r->len > u->slotcap)
		return 0;
	n = read_at(u->jfd, u->buf, (size_t)r->len, at + (off_t)sizeof(*r));
	if (n < 0 || (uint64_t)n != r->len)
		return 0;
	jr_sum(r, u->buf, d);
	return memcmp(d, r->sum, sizeof(d)) == 0;
}

/* Makes the plan of generation gen > 0: keep [0, base), then move
 * [ext, old) down to base. */
static int
plan_gen(struct plan *p, uint64_t gen, uint64_t base, uint64_t ext,
    uint64_t old)
{
	p->n = 0;
	p->gen = gen;
	p->old = old;
	if (base > ext || ext >= old)
		return -1;
	plan_add(p, 0, base);
	if (p->n != 1 || ext == base)
		return -1;
	plan_add(p, ext, old - ext);
	return plan_seal(p);
}

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
 * Reads the journal into u: header, plan, the newest valid record.
 * Returns NULL, or why the journal is not one to carry out.
 */
static const char *
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
	    memcmp(h.magic, jr_hdr_magic, sizeof(h.magic)) != 0 ||
	    h.nruns == 0 || h.nruns > ((uint64_t)jst->st_size - sizeof(h)) /
	    sizeof(struct jrun))
		return "torn header";
	p->n = p->alloc = (size_t)h.nruns;
	p->run = xreallocarray(NULL, p->n, sizeof(*p->run));
	if (read_at(u->jfd, (unsigned char *)p->run, p->n * sizeof(*p->run),
	    (off_t)sizeof(h)) != (ssize_t)(p->n * sizeof(*p->run)))
		return "torn header";
	jr_hdr_sum(&h, p, d);
	if (memcmp(d, h.sum, sizeof(d)) != 0)
		return "torn header";
	p->old = h.old;
	if (plan_seal(p) < 0 || p->final != h.final || h.final >= h.old ||
	    h.slotcap == 0 || h.slotcap > MBOX_UPDATE_CHUNK ||
	    h.tail_len == 0 || h.tail_len > MBOX_TAIL_MAX ||
	    h.tail_len > h.old - h.final)
		return "inconsistent header";
	if (h.dev != (uint64_t)st->st_dev || h.ino != (uint64_t)st->st_ino)
		return "journal of another file (the mailbox was replaced)";
	memcpy(u->hsum, h.sum, sizeof(u->hsum));
	p->tail_len = h.tail_len;
	memcpy(p->tail, h.tail, sizeof(p->tail));
	u->slotcap = h.slotcap;
	jr_layout(u);
	u->redo = plan_start(p);
	ok[0] = jr_read(u, 0, &r[0]);
	ok[1] = jr_read(u, 1, &r[1]);
	if (!ok[0] && !ok[1])
		return NULL;
	k = !ok[0] ? 1 : !ok[1] ? 0 : r[1].seq > r[0].seq;
	if (!jr_read(u, k, rec))	/* its data into u->buf */
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
static int
journal_recover(struct mailbox *mb, struct stat *st)
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
	upd_init(&u, mb, mb->journal_fd);
	p = &u.p;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	/* after a kill, the journal and the mailbox may still be partly in
	 * the page cache: what is read here must be on disk before any
	 * write is based on it (a record that a power cut could still take
	 * back would otherwise direct writes that destroy the octets the
	 * older record needs) */
	if (jr_sync(&u) < 0 || mb_sync_read(&u) < 0)
		goto fail;
	why = journal_load(&u, &jst, st, &rec, &have);
	if (why == NULL) {
		int intact = z >= p->old && plan_tail(mb, p, d) == 0 &&
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
	    mailbox_overwrite(&u, rec.pos, u.buf, rec.len) < 0)
		goto fail;
	if (cut && mb_sync(&u) < 0)
		goto fail;
	while (!cut) {
		uint64_t base = p->final;

		if (plan_run(&u, u.redo) < 0)
			goto fail;
		if (z == p->old) {
			if (plan_finish(&u) < 0)
				goto fail;
			break;
		}
		newmail += z - p->old;
		if (mb_sync(&u) < 0 ||
		    plan_gen(p, p->gen + 1, base, p->old, z) < 0)
			goto fail;
		plan_set_tail_len(p);
		if (plan_tail(mb, p, p->tail) < 0 || jr_write(&u, base, 0) < 0)
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
	upd_free(&u);
	return r;
}
