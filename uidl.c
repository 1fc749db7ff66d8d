/*
 * uidl.c: unique ids: popa3d's digest, X-UIDL and X-UID (with the
 * Dovecot-style template of --uidl-format), and the -2, -3 suffixes that
 * make them unique in the maildrop.
 * Calls: log.c.
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
 * message index + 1 (0: empty) in the low UIDL_IDX_BITS and the top bits
 * of the id's hash as a tag, which spares most renderings on a collision
 * (from 2^24 messages on, the slot number takes the tag's lowest hash bit
 * too: more renderings, never a wrong answer, as ids are compared whole).  A
 * slot's id is that of its message with the message's suffix.
 */
#define UIDL_IDX_BITS	25
#define UIDL_IDX_MASK	((1U << UIDL_IDX_BITS) - 1)

_Static_assert(MBOX_MAX_MESSAGES_OPT < UIDL_IDX_MASK,
    "a message index + 1 fits a slot");

struct uidl_set {
	uint32_t	*slot;
	uint32_t	*next;		/* per slot: next suffix to try, or NULL */
	size_t		 mask;
};

static uint32_t
uidl_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	while (n-- > 0)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static uint32_t
uidl_tag(uint32_t h)
{
	return h & ~UIDL_IDX_MASK;
}

/* Finds the slot of id s (or the empty slot where it belongs). */
static size_t
uidl_find(const struct mailbox *mb, const struct uidl_set *set, const char *s,
    size_t n, uint32_t h)
{
	char other[POP3D_UIDL_MAX + 1];
	size_t i = h & set->mask;

	for (;; i = (i + 1) & set->mask) {
		uint32_t v = set->slot[i];
		unsigned k = (v & UIDL_IDX_MASK) - 1;

		if (v == 0)
			return i;
		if ((v & ~UIDL_IDX_MASK) == uidl_tag(h) &&
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
void
uidl_unique(struct mailbox *mb)
{
	char id[POP3D_UIDL_MAX + 1];
	struct uidl_set set;
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
		h = uidl_hash(id, n);
		at = uidl_find(mb, &set, id, n, h);
		if (set.slot[at] != 0) {
			mb->msgs[i].suffix = UINT32_MAX;	/* to do */
			dups++;
			continue;
		}
		set.slot[at] = uidl_tag(h) | (i + 1);
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
		base = uidl_find(mb, &set, id, n, uidl_hash(id, n));
		for (k = set.next[base] ? set.next[base] : 2;; k++) {
			uint32_t h;

			n = uidl_render(mb, i, k, id);
			h = uidl_hash(id, n);
			at = uidl_find(mb, &set, id, n, h);
			if (set.slot[at] == 0) {
				mb->msgs[i].suffix = k;
				set.slot[at] = uidl_tag(h) | (i + 1);
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
