/*
 * conn.c: who the client is, at the start of a connection, and the
 * connect log line.  The client is the peer, unless the peer is a trusted
 * proxy (--proxy-from): then the connection must start with a PROXY
 * header (proxy.c) and its source address is the client's, everywhere
 * (logs, PAM_RHOST).  The header is read and parsed without privilege:
 * by the pre-auth child in root mode (which sends the parent the parsed
 * struct proxy_hdr, and the parent accepts it only after
 * proxy_hdr_check), by the session itself in user mode.  Log lines name
 * the client first and the proxy after it: "198.51.100.7 via 127.0.0.1".
 * Why the child parses and the parent only checks: a parser bug in the
 * root parent would be a root compromise; in the confined child it can at
 * worst name a wrong client, and only on connections from a peer the
 * parent itself (getpeername) found in --proxy-from.  The parent takes a
 * fixed-size record, never a string: it formats the address itself.
 *
 * Implicit TLS (issue 9; to be wired when it is merged): the header comes
 * before the TLS handshake, on the raw socket, which the TLS process
 * owns.  That process calls proxy_read() on the raw socket first, with
 * the limit conn_proxy_read uses, and writes the octets it got unchanged
 * into the socketpair ahead of the decrypted stream, then starts the
 * handshake; proxy_read takes nothing past the header, so the ClientHello
 * is still unread.  The TLS process only frames, never interprets: the
 * pre-auth child finds the header first on its input, as without TLS, and
 * conn_proxy_read parses it.  If proxy_read fails there, the TLS process
 * closes the connection without a handshake.
 * Calls: proxy.c, io.c, log.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "conn.h"

int
conn_trusted(const struct config *cfg, const char *rhost)
{
	struct proxy_addr a;

	return cfg->proxy_n > 0 && rhost != NULL &&
	    proxy_addr_parse(rhost, &a) == 0 &&
	    proxy_list_match(cfg->proxy_from, cfg->proxy_n, &a);
}

void
conn_start(struct session *s)
{
	snprintf(s->from, sizeof(s->from), "%s", s->rhost ? s->rhost : "local");
	if (!s->proxied)
		conn_log(s);
}

void
conn_log(const struct session *s)
{
	logmsg(LOG_INFO, "connect from %s", s->from);
}

/* Why proxy_read failed, for the log. */
static const char *
read_error(int err)
{
	switch (err) {
	case ETIMEDOUT:
		return "none within the time limit";
	case 0:
		return "connection closed before a whole header";
	case EPROTO:
		return "the connection does not start with one";
	default:
		return strerror(err);
	}
}

int
conn_proxy_read(struct session *s, struct proxy_hdr *h)
{
	unsigned char buf[POP3D_PROXY_MAX];
	struct io_limit lim = s->limit;
	int64_t end = io_now() + (int64_t)POP3D_PROXY_TIMEOUT * 1000;
	const char *why = NULL;
	size_t len;

	if (lim.end == 0 || end < lim.end)
		lim.end = end;
	if (proxy_read(s->in.fd, &lim, buf, &len) < 0)
		why = read_error(errno);
	else if (proxy_parse(buf, len, h, &why) == 0)
		return 0;
	/* the peer is our own proxy: no ban, but an administrator's fix */
	logmsg(LOG_NOTICE, "bad PROXY header from trusted proxy %s: %s",
	    s->rhost, why);
	out_str(&s->out, "-ERR PROXY protocol header expected.\r\n");
	out_flush(&s->out);
	s->done = 1;
	s->how = END_PROXY;
	return -1;
}

int
conn_proxy_accept(struct session *s, const struct proxy_hdr *h)
{
	const char *proxy = s->rhost;

	if (!proxy_hdr_check(h))
		return -1;
	if (h->kind == PROXY_TCP) {
		proxy_addr_str(&h->src, s->client, sizeof(s->client));
		snprintf(s->from, sizeof(s->from), "%s via %s", s->client,
		    proxy);
		s->rhost = s->client;
	} else
		/* the proxy's own connection (a health check), or one it
		 * cannot attribute: the peer is all we know */
		snprintf(s->from, sizeof(s->from), "%s (proxy %s)", proxy,
		    h->kind == PROXY_LOCAL ? "LOCAL" : "UNKNOWN");
	return 0;
}
