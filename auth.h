/*
 * auth.h: checking a login: PAM (service pop3d) for system users, or a
 * password file of crypt(3) hashes for virtual users; the account found.
 */
#ifndef AUTH_H
#define AUTH_H

#include <limits.h>
#include <sys/types.h>
#include "pop3d.h"

struct account {
	char	name[POP3D_USER_MAX + 1];	/* canonical login name */
	uid_t	uid;				/* the session runs as this */
	gid_t	gid;
	char	system_name[POP3D_USER_MAX + 1];	/* its system user */
	char	home[PATH_MAX];
	char	mailbox[PATH_MAX];		/* the maildrop path */
	int	virtual;			/* from the password file */
};

/* Outcomes of auth_login(). */
enum { AUTH_OK = 0, AUTH_FAIL = -1, AUTH_TEMP = -2 };

/* Whether a login name is acceptable at all: 1..POP3D_USER_MAX bytes of
 * letters, digits and ._-@+, not starting with '-' or '.'.  Returns 1 or 0. */
int	auth_valid_name(const char *user);

/*
 * Checks user and pass: the password file first (when configured), then
 * PAM.  rhost is the peer address or NULL.  On AUTH_OK fills acct,
 * including the maildrop path from the template.  In user mode (cfg->root
 * == 0) only the invoking user, or a virtual user, can succeed.  Unknown
 * users cost the same as known ones.  Wipes pass before returning.
 */
int	auth_login(const struct config *cfg, const char *user, char *pass,
	    const char *rhost, struct account *acct);

/* Expands the mailbox template (%u, %h, %%) for acct into buf.
 * Returns 0, or -1 when the result does not fit or is not absolute. */
int	auth_mailbox_path(const char *tmpl, const struct account *acct,
	    char *buf, size_t size);

#endif
