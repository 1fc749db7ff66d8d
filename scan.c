/*
 * scan.c: reading the mbox: message fingerprints, the From_ line and its
 * date, header lines, the streaming scanner (its state and invariants
 * above struct scan) with its SIMD body path, and the digest of the
 * file's tail.
 * Calls: io.c (read_at), log.c.
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

/* ---- fingerprints ------------------------------------------------- */

/* Digest of len octets at off, or -1 on a short read or error. */
int
scan_digest_at(struct mailbox *mb, off_t off, size_t len, uint64_t *v)
{
	ssize_t n = read_at(mb->fd, mb->buf, len, off);

	if (n < 0 || (size_t)n != len)
		return -1;
	*v = XXH3_64bits(mb->buf, len);
	return 0;
}

/* Is the fingerprint of a message (or the pseudo-message) unchanged? */
int
scan_fp_ok(struct mailbox *mb, off_t from, uint32_t len, uint64_t fp)
{
	uint64_t v;

	return scan_digest_at(mb, from, len, &v) == 0 && v == fp;
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
int
scan_from_valid(const unsigned char *line, size_t len)
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
int
scan_hdr_is(const unsigned char *h, size_t n, const char *name)
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

	if (scan_hdr_is(h, n, "X-IMAP:") || scan_hdr_is(h, n, "X-IMAPbase:")) {
		if (scan_hdr_is(h, n, "X-IMAP:"))
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
	} else if (scan_hdr_is(h, n, "Subject:")) {
		if (memmem(h, n, "FOLDER INTERNAL DATA", 20) != NULL)
			sc->folder = 1;
	} else if (sc->mb->mode == UIDL_XUIDL && scan_hdr_is(h, n, "X-UIDL:")) {
		vn = hdr_value(h, n, 7, &v);
		scan_xuidl(sc, v, vn, complete);
	} else if (sc->mb->mode == UIDL_XUID && scan_hdr_is(h, n, "X-UID:") &&
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
		sc->fixed = !sc->received && scan_hdr_is(h, n, "Received:");
		if (sc->fixed)
			sc->received = 1;
		break;
	case 'D':
	case 'd':
		sc->fixed = scan_hdr_is(h, n, "Delivered-To:") ||
		    (!sc->received && scan_hdr_is(h, n, "Date:"));
		break;
	case 'M':
	case 'm':
		sc->fixed = !sc->received && scan_hdr_is(h, n, "Message-ID:");
		break;
	case 'X':
		sc->fixed = scan_hdr_is(h, n, "X-Delivery-ID:");
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
	if (!scan_from_valid(line, 5 + sc->tail_len - i)) {
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
	    (complete && scan_from_valid(h, n))))
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
int
scan_file(struct mailbox *mb, off_t start, uint64_t octets)
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
int
scan_tail(struct mailbox *mb)
{
	mb->tail_len = (uint32_t)min_size(MBOX_TAIL_MAX, (uint64_t)mb->size);
	if (mb->tail_len == 0)
		return MB_OK;
	if (scan_digest_at(mb, mb->size - mb->tail_len, mb->tail_len,
	    &mb->tail_fp) < 0) {
		logmsg(LOG_ERR, "%s: read: %s", mb->path, strerror(errno));
		return MB_TEMP;
	}
	return MB_OK;
}
