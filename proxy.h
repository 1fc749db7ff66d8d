/*
 * proxy.h: the PROXY protocol (HAProxy's proxy-protocol.txt, v1 text and
 * v2 binary) as a trusted proxy sends it before the first POP3 octet, and
 * the --proxy-from list of trusted peers (proxy.c).
 */
#ifndef PROXY_H
#define PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "io.h"

/* An IPv4 or IPv6 address (an IPv4-mapped IPv6 one is kept as IPv4). */
struct proxy_addr {
	uint32_t	family;		/* AF_INET or AF_INET6 */
	unsigned char	addr[16];	/* network order; AF_INET uses 4 */
	uint16_t	port;		/* host order; 0 when unknown */
};

/* One entry of --proxy-from: an address and its prefix length. */
struct proxy_net {
	struct proxy_addr a;
	unsigned	bits;
};

/* What a valid header says.  PROXY_TCP: src is the client.  PROXY_LOCAL
 * (v2 LOCAL, a health check) and PROXY_UNKNOWN (v1 UNKNOWN, or v2 PROXY
 * over a family or transport other than TCP): the connection is the
 * proxy's own, or the proxy cannot tell who the client is; the peer's
 * real address stands. */
enum { PROXY_TCP = 1, PROXY_LOCAL, PROXY_UNKNOWN };

/* The header's meaning, and the record the pre-auth child sends to the
 * root parent (fixed size, checked again by proxy_hdr_check). */
struct proxy_hdr {
	uint32_t	kind;		/* PROXY_ */
	struct proxy_addr src, dst;	/* PROXY_TCP only */
};

/*
 * Parses an address (IPv4 dotted quad without leading zeros, or IPv6)
 * into *a; an IPv4-mapped IPv6 address becomes IPv4.  Returns 0 or -1.
 */
int	proxy_addr_parse(const char *s, struct proxy_addr *a);
/* The address as text (inet_ntop) in buf.  Returns buf. */
char	*proxy_addr_str(const struct proxy_addr *a, char *buf, size_t size);

/*
 * Parses --proxy-from: comma-separated addresses and ADDRESS/BITS
 * prefixes (no bits set past the prefix), at most max of them.  Returns
 * the count, or -1 with a message for the user in *why.
 */
int	proxy_list_parse(const char *list, struct proxy_net *nets, size_t max,
	    const char **why);
/* Whether a is in one of the n nets: 1 or 0. */
int	proxy_list_match(const struct proxy_net *nets, size_t n,
	    const struct proxy_addr *a);

/*
 * Framing: given the first n octets of a connection, how many more to
 * read without reading past the header (so that what follows, POP3 or a
 * TLS handshake, stays unread).  Returns that count (> 0), 0 when buf[0..n)
 * is a whole header, -1 when it cannot be one (wrong start, no CRLF in
 * the first 107 octets, more than POP3D_PROXY_MAX octets).
 */
long	proxy_need(const unsigned char *buf, size_t n);

/*
 * Parses a whole header (proxy_need said 0) strictly: v1 with exactly one
 * space between fields, canonical addresses and ports, CRLF; v2 with
 * version 2, command LOCAL or PROXY, a known family, an address block
 * that fits, TLVs skipped.  Returns 0 with *h set, or -1 with the reason
 * (for the log) in *why.
 */
int	proxy_parse(const unsigned char *buf, size_t n, struct proxy_hdr *h,
	    const char **why);

/* Whether a record from the pre-auth child is one proxy_parse could have
 * made: 1 or 0. */
int	proxy_hdr_check(const struct proxy_hdr *h);

/*
 * Reads one header's octets from fd, exactly, into buf (at least
 * POP3D_PROXY_MAX octets), each wait bounded by lim; sets *len.  Returns
 * 0; or -1 with errno ETIMEDOUT (lim ended a wait), 0 (end of input),
 * EPROTO (not a header), or that of the read.  Reads the raw connection:
 * with implicit TLS the header precedes the handshake (see conn.c).
 */
int	proxy_read(int fd, const struct io_limit *lim, unsigned char *buf,
	    size_t *len);

#endif
