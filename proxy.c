/*
 * proxy.c: the PROXY protocol that a trusted proxy (HAProxy, nginx) puts
 * before the first POP3 octet (HAProxy's proxy-protocol.txt: v1, one text
 * line; v2, binary with TLVs), and the --proxy-from list of trusted peers.
 * Everything here but proxy_read is pure (no I/O, no state), so that the
 * unit tests and the fuzz target drive it with tables.  The root parent
 * never calls proxy_need or proxy_parse: the pre-auth child does, and the
 * parent only checks the record (proxy_hdr_check).
 * Calls: io.c (read_full).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy.h"

/* The 12-octet v2 signature, and the v1 start. */
static const unsigned char v2sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};
#define V1START		"PROXY "
#define V1START_LEN	6
/* The longest v1 line with its CRLF (spec section 2.1). */
#define V1_MAX		107
/* The v2 fixed part: signature, version and command, family, length. */
#define V2_FIXED	16

/* ---- addresses -------------------------------------------------------- */

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes IPv4. */
static void
addr_unmap(struct proxy_addr *a)
{
	static const unsigned char prefix[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};

	if (a->family == AF_INET6 && memcmp(a->addr, prefix, 12) == 0) {
		memmove(a->addr, a->addr + 12, 4);
		memset(a->addr + 4, 0, 12);
		a->family = AF_INET;
	}
}

/* A decimal number of [p, end) without sign or leading zero, at most max.
 * Returns it, or -1. */
static long
decimal(const char *p, const char *end, long max)
{
	long v = 0;

	if (p == end || (*p == '0' && end - p > 1))
		return -1;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
		if (v > max)
			return -1;
	}
	return v;
}

/* Four decimal octets separated by dots, nothing else.  Returns 0 or -1. */
static int
ipv4_parse(const char *s, unsigned char out[4])
{
	const char *p = s;
	int i;

	for (i = 0; i < 4; i++) {
		const char *end = p;
		long v;

		while (*end >= '0' && *end <= '9')
			end++;
		if ((v = decimal(p, end, 255)) < 0 ||
		    *end != (i < 3 ? '.' : '\0'))
			return -1;
		out[i] = (unsigned char)v;
		p = end + 1;
	}
	return 0;
}

int
proxy_addr_parse(const char *s, struct proxy_addr *a)
{
	memset(a, 0, sizeof(*a));
	if (ipv4_parse(s, a->addr) == 0) {
		a->family = AF_INET;
		return 0;
	}
	/* inet_pton takes only hex groups, one "::" and a dotted tail: no
	 * zone, no space, no prefix */
	if (strchr(s, ':') == NULL || inet_pton(AF_INET6, s, a->addr) != 1)
		return -1;
	a->family = AF_INET6;
	addr_unmap(a);
	return 0;
}

char *
proxy_addr_str(const struct proxy_addr *a, char *buf, size_t size)
{
	if (inet_ntop(a->family == AF_INET ? AF_INET : AF_INET6, a->addr, buf,
	    (socklen_t)size) == NULL && size > 0)
		buf[0] = '\0';
	return buf;
}

/* ---- --proxy-from ----------------------------------------------------- */

/* Whether the first bits of a and b are equal: 1 or 0. */
static int
prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned whole = bits / 8, rest = bits % 8;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));

	if (memcmp(a, b, whole) != 0)
		return 0;
	return rest == 0 || ((a[whole] ^ b[whole]) & mask) == 0;
}

/* One entry, ADDRESS or ADDRESS/BITS, into *net.  Returns 0, or -1 with
 * *why set. */
static int
net_parse(char *item, struct proxy_net *net, const char **why)
{
	char *slash = strchr(item, '/');
	struct proxy_addr host;
	unsigned max, i;
	long bits;
	int mapped;

	if (slash != NULL)
		*slash++ = '\0';
	if (proxy_addr_parse(item, &net->a) < 0) {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	/* ::ffff:10.0.0.0/104 became IPv4: its prefix counts from bit 96 */
	mapped = strchr(item, ':') != NULL && net->a.family == AF_INET;
	max = net->a.family == AF_INET ? 32 : 128;
	bits = max;
	if (slash != NULL) {
		bits = decimal(slash, slash + strlen(slash), mapped ? 128 : max);
		if (bits < 0 || (mapped && bits < 96)) {
			*why = "a prefix length is a number up to 32 (IPv4) "
			    "or 128 (IPv6)";
			return -1;
		}
		if (mapped)
			bits -= 96;
	}
	net->bits = (unsigned)bits;
	/* 10.0.0.1/8 is a typo for 10.0.0.0/8 or for 10.0.0.1: ask */
	host = net->a;
	for (i = net->bits; i < max; i++)
		host.addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
	if (memcmp(host.addr, net->a.addr, sizeof(host.addr)) != 0) {
		*why = "bits are set past the prefix length";
		return -1;
	}
	return 0;
}

int
proxy_list_parse(const char *list, struct proxy_net *nets, size_t max,
    const char **why)
{
	char buf[POP3D_PROXY_FROM_MAX * 50], *p = buf, *comma;
	size_t n = 0;

	if (snprintf(buf, sizeof(buf), "%s", list) >= (int)sizeof(buf)) {
		*why = "the list is too long";
		return -1;
	}
	for (;;) {
		if ((comma = strchr(p, ',')) != NULL)
			*comma = '\0';
		if (n == max) {
			*why = "too many entries";
			return -1;
		}
		if (net_parse(p, &nets[n], why) < 0)
			return -1;
		n++;
		if (comma == NULL)
			return (int)n;
		p = comma + 1;
	}
}

int
proxy_list_match(const struct proxy_net *nets, size_t n,
    const struct proxy_addr *a)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (nets[i].a.family == a->family &&
		    prefix_equal(nets[i].a.addr, a->addr, nets[i].bits))
			return 1;
	return 0;
}

/* ---- framing ---------------------------------------------------------- */

long
proxy_need(const unsigned char *buf, size_t n)
{
	size_t i, total;

	if (n == 0)
		return 1;
	if (buf[0] == v2sig[0]) {
		/* v2: the signature octet by octet (a POP3 client's blank
		 * lines must not make us wait for 16 octets), then exact */
		if (memcmp(buf, v2sig, n < 12 ? n : 12) != 0)
			return -1;
		if (n < 12)
			return 1;
		if (n > 12 && (buf[12] & 0xf0) != 0x20)
			return -1;
		if (n < V2_FIXED)
			return (long)(V2_FIXED - n);
		total = V2_FIXED + ((size_t)buf[14] << 8 | buf[15]);
		if (total > POP3D_PROXY_MAX || n > total)
			return -1;
		return (long)(total - n);
	}
	/* v1: one octet at a time up to the first CRLF, which ends it */
	if (memcmp(buf, V1START, n < V1START_LEN ? n : V1START_LEN) != 0 ||
	    n > V1_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		if (buf[i] == '\n')
			return i == n - 1 && i > 0 && buf[i - 1] == '\r' ? 0 : -1;
		if (buf[i] == '\r' && i + 1 < n && buf[i + 1] != '\n')
			return -1;
	}
	return n < V1_MAX ? 1 : -1;
}

/* ---- parsing ---------------------------------------------------------- */

/* The next space-separated field of a v1 line at *p: copied to out (at
 * most size - 1 octets), *p moved past it and its one space.  Returns 0,
 * or -1 when it is empty, too long, or not followed by sep. */
static int
v1_field(const char **p, const char *end, char sep, char *out, size_t size)
{
	const char *f = *p, *e = f;

	while (e < end && *e != ' ' && *e != '\r')
		e++;
	if (e == f || (size_t)(e - f) >= size || e == end || *e != sep)
		return -1;
	memcpy(out, f, (size_t)(e - f));
	out[e - f] = '\0';
	*p = e + 1;
	return 0;
}

/* One v1 address of the announced family into *a.  Returns 0 or -1. */
static int
v1_addr(const char *text, uint32_t family, struct proxy_addr *a)
{
	/* the family the text has, before unmapping, must be announced */
	if ((family == AF_INET) != (strchr(text, ':') == NULL))
		return -1;
	return proxy_addr_parse(text, a);
}

/* v1: "PROXY" SP proto SP src SP dst SP sport SP dport CRLF. */
static int
parse_v1(const unsigned char *buf, size_t n, struct proxy_hdr *h,
    const char **why)
{
	const char *p = (const char *)buf + V1START_LEN;
	const char *end = (const char *)buf + n - 1;	/* at the LF */
	char proto[8], src[48], dst[48], sport[8], dport[8];
	uint32_t family;
	long sp, dp;

	*why = "malformed v1 header";
	if (memchr(buf, '\0', n) != NULL)
		return -1;
	/* UNKNOWN: the rest up to the CRLF is the sender's business */
	if (n >= V1START_LEN + sizeof("UNKNOWN\r\n") - 1 &&
	    memcmp(p, "UNKNOWN", 7) == 0 && (p[7] == ' ' || p[7] == '\r')) {
		h->kind = PROXY_UNKNOWN;
		return 0;
	}
	if (v1_field(&p, end, ' ', proto, sizeof(proto)) < 0)
		return -1;
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else {
		*why = "v1 protocol is not TCP4, TCP6 or UNKNOWN";
		return -1;
	}
	if (v1_field(&p, end, ' ', src, sizeof(src)) < 0 ||
	    v1_field(&p, end, ' ', dst, sizeof(dst)) < 0 ||
	    v1_field(&p, end, ' ', sport, sizeof(sport)) < 0 ||
	    v1_field(&p, end, '\r', dport, sizeof(dport)) < 0 ||
	    p != end)
		return -1;
	if (v1_addr(src, family, &h->src) < 0 ||
	    v1_addr(dst, family, &h->dst) < 0) {
		*why = "v1 address is not a canonical address of the "
		    "announced family";
		return -1;
	}
	if ((sp = decimal(sport, sport + strlen(sport), 65535)) < 0 ||
	    (dp = decimal(dport, dport + strlen(dport), 65535)) < 0) {
		*why = "v1 port is not a number from 0 to 65535";
		return -1;
	}
	h->src.port = (uint16_t)sp;
	h->dst.port = (uint16_t)dp;
	h->kind = PROXY_TCP;
	return 0;
}

/* The TLVs after the address block: each must fit.  Returns 0 or -1. */
static int
v2_tlvs(const unsigned char *p, size_t len)
{
	while (len > 0) {
		size_t vlen;

		if (len < 3)
			return -1;
		vlen = (size_t)p[1] << 8 | p[2];
		if (vlen > len - 3)
			return -1;
		p += 3 + vlen;
		len -= 3 + vlen;
	}
	return 0;
}

/* v2: the signature, version 2, LOCAL or PROXY, family and transport,
 * the address block, TLVs (skipped). */
static int
parse_v2(const unsigned char *buf, size_t n, struct proxy_hdr *h,
    const char **why)
{
	size_t len = (size_t)buf[14] << 8 | buf[15], alen;
	unsigned cmd = buf[12] & 0x0f, fam = buf[13] >> 4, proto = buf[13] & 0x0f;
	const unsigned char *a = buf + V2_FIXED;

	*why = "malformed v2 header";
	if ((buf[12] & 0xf0) != 0x20 || n != V2_FIXED + len) {
		*why = "not a version 2 header";
		return -1;
	}
	if (cmd == 0) {
		/* LOCAL: the proxy's own connection; the block is ignored */
		h->kind = PROXY_LOCAL;
		return 0;
	}
	if (cmd != 1 || fam > 3 || proto > 2) {
		*why = "v2 command, family or transport unknown";
		return -1;
	}
	if (proto != 1 || fam == 0 || fam == 3) {
		/* valid, but not TCP over IP: the spec's fallback to UNSPEC */
		h->kind = PROXY_UNKNOWN;
		return 0;
	}
	alen = fam == 1 ? 12 : 36;
	if (len < alen || v2_tlvs(a + alen, len - alen) < 0)
		return -1;
	h->src.family = h->dst.family = fam == 1 ? AF_INET : AF_INET6;
	memcpy(h->src.addr, a, alen == 12 ? 4 : 16);
	memcpy(h->dst.addr, a + (alen == 12 ? 4 : 16), alen == 12 ? 4 : 16);
	a += alen - 4;
	h->src.port = (uint16_t)(a[0] << 8 | a[1]);
	h->dst.port = (uint16_t)(a[2] << 8 | a[3]);
	addr_unmap(&h->src);
	addr_unmap(&h->dst);
	h->kind = PROXY_TCP;
	return 0;
}

int
proxy_parse(const unsigned char *buf, size_t n, struct proxy_hdr *h,
    const char **why)
{
	memset(h, 0, sizeof(*h));
	if (proxy_need(buf, n) != 0) {
		*why = "incomplete or malformed header";
		return -1;
	}
	return buf[0] == v2sig[0] ? parse_v2(buf, n, h, why) :
	    parse_v1(buf, n, h, why);
}

/* Whether an address in a record is one the parser makes: 1 or 0. */
static int
addr_check(const struct proxy_addr *a)
{
	struct proxy_addr copy = *a;

	if (a->family != AF_INET && a->family != AF_INET6)
		return 0;
	addr_unmap(&copy);
	return copy.family == a->family;
}

int
proxy_hdr_check(const struct proxy_hdr *h)
{
	if (h->kind == PROXY_LOCAL || h->kind == PROXY_UNKNOWN)
		return 1;
	return h->kind == PROXY_TCP && addr_check(&h->src) &&
	    addr_check(&h->dst);
}

/* ---- reading ---------------------------------------------------------- */

/*
 * Reads exactly what proxy_need asks for, so nothing after the header is
 * taken from the connection.  Octet by octet for v1: at most 107 reads
 * once per connection, and it works on pipes, where MSG_PEEK does not.
 */
int
proxy_read(int fd, const struct io_limit *lim, unsigned char *buf,
    size_t *len)
{
	long need;

	*len = 0;
	while ((need = proxy_need(buf, *len)) > 0) {
		if (read_full(fd, buf + *len, (size_t)need, lim) < 0)
			return -1;
		*len += (size_t)need;
	}
	if (need < 0) {
		errno = EPROTO;
		return -1;
	}
	return 0;
}
