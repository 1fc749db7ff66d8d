/*
 * conn.h: who the client is: the peer, or the source a trusted proxy
 * names in its PROXY header (conn.c).
 */
#ifndef CONN_H
#define CONN_H

#include "proxy.h"
#include "session.h"

/* Whether the peer rhost (numeric, or NULL) is in --proxy-from: 1 or 0. */
int	conn_trusted(const struct config *cfg, const char *rhost);
/* At the connect: the client is the peer (s->from); logs the connect
 * line unless the peer is a proxy, whose header conn_proxy_accept takes. */
void	conn_start(struct session *s);
/* Logs the connect line: "connect from CLIENT[ via PROXY]". */
void	conn_log(const struct session *s);
/*
 * Proxied, before anything else reads the input: reads the header from
 * the connection within POP3D_PROXY_TIMEOUT (and --auth-timeout) and
 * parses it.  Returns 0 with *h set; or -1 after logging, answering -ERR
 * and ending the session (END_PROXY).
 */
int	conn_proxy_read(struct session *s, struct proxy_hdr *h);
/*
 * Proxied: takes a parsed header (from this process, or the pre-auth
 * child's record): the client's address becomes s->rhost, s->from names
 * client and proxy.  Returns 0, or -1 when h is not a record proxy_parse
 * could have made.
 */
int	conn_proxy_accept(struct session *s, const struct proxy_hdr *h);

#endif
