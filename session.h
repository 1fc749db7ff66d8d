/*
 * session.h: struct session and what root.c and pop3d.c call in
 * session.c.
 */
#ifndef SESSION_H
#define SESSION_H

#include <netinet/in.h>

#include "auth.h"
#include "io.h"
#include "mailbox.h"
#include "outcome.h"
#include "pop3d.h"
#include "state.h"
#include "tls.h"

enum { ST_AUTH = 1, ST_TRANS = 2 };

/* How a session ended, for the log.  The pre-auth child reports it to
 * the parent as its exit status: these values, in this order; END_NONE
 * (not ended by any of them) is logged as a disconnect, and a child
 * exits with END_ABORTED for it. */
enum {
	END_ABORTED, END_QUIT, END_TIMEOUT, END_DISCONNECT, END_AUTH_FAILURES,
	END_BAD_COMMANDS, END_PROXY, END_NONE
};

struct session {
	const struct config	*cfg;
	struct io_limit		 limit;		/* of every wait for the client */
	struct in		 in;
	struct out		 out;
	int			 state;
	int			 priv_fd;	/* to the parent, in the child */
	/* the pre-auth child's login (root.c): to the parent; NULL: here */
	int			(*login)(struct session *, const char *user,
				    char *pass);
	/* the pre-auth child's STLS (root.c): the parent starts the TLS
	 * process; NULL: here.  Returns R_SENT when it is ready. */
	int			(*stls)(struct session *);
	struct tls		 tls;
	int			 fails, bad;
	int			 done;		/* QUIT or a fatal reply */
	int			 how;		/* END_: how it ended, for the log */
	char			 user[POP3D_USER_MAX + 1];
	int			 have_user;
	/* the last name a failed login tried, for the summary line */
	char			 tried[POP3D_USER_MAX + 1];
	const char		*rhost;		/* the client's address, or NULL */
	/* PROXY protocol (conn.c): the peer is in --proxy-from */
	int			 proxied;
	char			 client[INET6_ADDRSTRLEN];	/* from its header */
	char			 from[128];	/* "CLIENT via PROXY", for logs */
	struct account		 acct;
	struct mailbox		*mb;
	uint64_t		 total_bytes;	/* at login, for the log */
	struct state		 st;		/* the account's state files */
	unsigned		 retr_n, del_n;
	uint64_t		 retr_bytes, del_bytes;
};

void	session_limit(struct session *s, int64_t connected);
int	session_start(struct session *s);
int	session_check_login(struct session *s, const char *user, char *pass);
void	session_error(struct session *s, int r);
void	session_use_tls(struct session *s);
void	session_loop(struct session *s);
void	session_log_summary(const struct session *s);

#endif
