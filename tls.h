/*
 * tls.h: the TLS process (tls.c): started by the session (user mode) or
 * the root parent, it alone loads the key and relays between the client
 * and a socketpair over which everything else speaks plaintext POP3.
 */
#ifndef TLS_H
#define TLS_H

#include <stdint.h>
#include <sys/types.h>

#include "pop3d.h"

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" and the like, with room to spare. */
#define TLS_INFO_MAX	96

struct tls {
	pid_t	 pid;		/* the TLS process; 0: none was started */
	int	 plain;		/* our end of the plaintext socketpair; -1 */
	int	 plain_peer;	/* its end, until it is forked; -1 */
	int	 ctl;		/* its reports to us; -1 */
	int	 ctl_peer;	/* its end of those, until it is forked; -1 */
	int	 active;	/* the session speaks through it */
	int	 failed;	/* a start failed: no second try */
	int	 drop;		/* root mode: it chroots and becomes uid/gid */
	int	 proxy;		/* implicit TLS from a trusted proxy: the
				 * PROXY header is passed on, unread, first */
	uid_t	 uid;
	gid_t	 gid;
	char	 info[TLS_INFO_MAX];	/* after tls_finish: the summary */
};

/* No TLS process, no descriptors. */
void	tls_init(struct tls *t);
/* Creates the socketpairs before a helper is forked that must inherit
 * the plaintext end (the pre-auth child).  Returns 0 or -1 (logged). */
int	tls_prepare(struct tls *t);
/*
 * Forks the TLS process on the client's net_in/net_out, which must finish
 * its handshake by deadline (io_now() time) and logs rhost on failure;
 * waits until it has loaded the certificate and key and confined itself.
 * Returns 0 (t->plain is then the session's side), or -1 (logged: the
 * files could not be loaded, or it did not start in time).
 */
int	tls_start(struct tls *t, const struct config *cfg, int net_in,
	    int net_out, int64_t deadline, const char *rhost);
/* In a forked helper that is not the TLS process: closes its descriptors
 * except the plaintext end. */
void	tls_forget(struct tls *t);
/* After the switch to t->plain: the client's descriptors no longer lead
 * to the client (/dev/null where it can be opened, else closed); stderr
 * too unless it is the --debug log, since inetd passes the socket there. */
void	tls_release_raw(int net_in, int net_out);
/* At the end of the session: closes the plaintext end, waits for the TLS
 * process to deliver the rest and exit, and sets t->info to its report. */
void	tls_finish(struct tls *t);

#endif
