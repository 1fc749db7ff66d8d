/*
 * pop3d.h: the configuration (struct config) that main() builds and every
 * module reads, and the session entry.  Limits and defaults are in
 * params.h, logging in log.h.
 */
#ifndef POP3D_H
#define POP3D_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "log.h"
#include "params.h"

enum uidl_mode {
	UIDL_DIGEST,	/* digest of the delivery headers (default) */
	UIDL_XUIDL,	/* X-UIDL: header (Qpopper, Mailutils) */
	UIDL_XUID	/* X-UID: under X-IMAPbase/X-IMAP (UW, Dovecot) */
};

struct proxy_net;

struct config {
	const char	*mailbox;	/* template: %u user, %h home, %% */
	const char	*passwd_file;	/* virtual users, or NULL */
	const char	*pam_service;
	const char	*virtual_user;	/* system user for virtual users */
	const char	*state_dir;	/* session locks; NULL: default */
	int		 auth_timeout;	/* seconds, connect to login */
	int		 idle_timeout;	/* seconds, after login */
	int		 lock_timeout;	/* seconds */
	int		 fail_delay_ms;
	int		 debug;
	int		 root;		/* started as root: privilege separation */
	unsigned	 max_messages;	/* messages served per session; 0: default */
	uint64_t	 max_bytes;	/* octets (as STAT counts) served; 0: any */
	enum uidl_mode	 uidl_mode;
	const char	*uidl_format;	/* X-UID ids (--uidl-format); NULL:
					 * POP3D_UIDL_FORMAT */
	const char	*tls_cert;	/* PEM chain; NULL: no TLS at all */
	const char	*tls_key;	/* PEM private key (only the TLS process) */
	const char	*tls_user;	/* the TLS process's user (root mode) */
	int		 tls_implicit;	/* TLS from the first octet (pop3s) */
	int		 allow_plaintext_auth;	/* logins before TLS, with TLS */
	const struct proxy_net *proxy_from;	/* --proxy-from (proxy.h) */
	size_t		 proxy_n;	/* its entries; 0: no PROXY protocol */
	int		 shared_spool;	/* several hosts share spool and state:
					 * state named by the inode alone */
};

/* pop3d.c */
int	pop3d_session(const struct config *, int infd, int outfd,
	    const char *rhost);
/* session.c */
int	parse_number(const char *, unsigned long max, unsigned long *v);

#endif
