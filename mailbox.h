/*
 * mailbox.h: the user's mbox maildrop: open checks, locking, scan, change
 * detection, message output and the UPDATE at QUIT.
 */
#ifndef MAILBOX_H
#define MAILBOX_H

#include <stdint.h>
#include <sys/types.h>
#include "pop3d.h"
#include "io.h"

struct mailbox;		/* opaque */

/* Outcomes of the mailbox operations that can fail. */
enum {
	MB_OK = 0,
	MB_PERM = -1,		/* unreadable, unsafe or malformed: [SYS/PERM] */
	MB_TEMP = -2,		/* full disk, I/O, resources: [SYS/TEMP] */
	MB_CHANGED = -3,	/* another program rewrote the mailbox */
	MB_CLIENT = -4,		/* the client went away during output */
	MB_LOCKED = -5		/* the locks stayed busy: [SYS/TEMP] */
};

/* How to open a maildrop. */
struct mailbox_opts {
	uid_t		 owner;		/* the file must belong to this uid */
	enum uidl_mode	 mode;
	const char	*uidl_format;	/* UIDL_XUID ids; NULL: the default */
	int		 lock_timeout;	/* seconds, total, for both locks */
	unsigned	 max_messages;	/* 0: MBOX_MAX_MESSAGES */
	uint64_t	 max_bytes;	/* 0: no limit */
	int		 journal_fd;	/* UPDATE journal, or -1 */
	int		 cache_fd;	/* scan cache (a hint), or -1 */
	int		 pseudo_ok;	/* the state trusts a UW/Dovecot
					 * pseudo-message first: hide it */
	int		 shared;	/* on storage several hosts share:
					 * journal and cache name the file
					 * by its inode alone; dotlocks
					 * without a PID */
};

/*
 * Opens, checks, locks, scans and unlocks the maildrop at path.  The file
 * must be a regular file owned by o->owner with one link, opened without
 * following symlinks; a missing or empty file is an empty maildrop.
 * Returns MB_OK with *mbp set, or MB_PERM / MB_TEMP / MB_LOCKED.
 */
int	mailbox_open(struct mailbox **mbp, const char *path,
	    const struct mailbox_opts *o);
/* The two halves of mailbox_open, for a caller that names its state
 * after the opened file: mailbox_file() opens path (as the user) and
 * checks it as mailbox_open does; it returns MB_OK with *fd set (-1 when
 * there is no file) or MB_PERM / MB_TEMP.  mailbox_open_fd() takes over
 * that fd (or -1) and does the rest. */
int	mailbox_file(const char *path, uid_t owner, int *fd);
int	mailbox_open_fd(struct mailbox **mbp, const char *path, int fd,
	    const struct mailbox_opts *o);
void	mailbox_close(struct mailbox *);

/* Messages in the maildrop as scanned, deleted ones included (1..count). */
unsigned	mailbox_count(const struct mailbox *);
/* Messages and octets not marked deleted. */
void		mailbox_stat(const struct mailbox *, unsigned *n, uint64_t *octets);
/* Octets of message n as RETR sends it (before dot-stuffing). */
uint64_t	mailbox_size(const struct mailbox *, unsigned n);
int		mailbox_is_deleted(const struct mailbox *, unsigned n);
void		mailbox_delete(struct mailbox *, unsigned n);
void		mailbox_reset(struct mailbox *);
/* Checks an X-UID id template (--uidl-format; the syntax of Dovecot's
 * pop3_uidl_format, see uidl.c).  Returns 0, or -1 when pop3d does
 * not support it or its ids could be invalid. */
int		mailbox_uidl_format_check(const char *fmt);
/* Writes the unique-id of message n (1..70 printable octets) into buf. */
void		mailbox_uidl(const struct mailbox *, unsigned n,
		    char buf[POP3D_UIDL_MAX + 1]);

/* From now on, mailbox_update() refuses (MB_TEMP): a journal of the
 * file this maildrop's path named before waits for an administrator. */
void		mailbox_hold_update(struct mailbox *);
/* Is a pseudo-message hidden at the start of the file?  1 or 0. */
int		mailbox_pseudo(const struct mailbox *);

/* Octets the scan at open read: all, or only those after the messages
 * taken from the scan cache (for the tests and benchmarks). */
uint64_t	mailbox_scanned_octets(const struct mailbox *);

/*
 * Checks, before message n is sent, that the file was not rewritten
 * (appended mail is fine).  Returns MB_OK, MB_CHANGED or MB_TEMP.
 */
int	mailbox_check(struct mailbox *, unsigned n);

/*
 * Sends message n to out: with lines < 0 the whole message, otherwise
 * the header, the blank line and that many body lines (TOP).  LF becomes
 * CRLF, lines starting with "." are dot-stuffed, the terminating ".\r\n"
 * is written.  Call mailbox_check() first; a rewrite during the reads
 * is caught before the terminator, so a client never takes a damaged
 * message for whole.
 * Returns MB_OK, MB_CHANGED, MB_TEMP (read error) or MB_CLIENT.
 */
int	mailbox_send(struct mailbox *, unsigned n, long lines, struct out *);

/*
 * UPDATE: removes the deleted messages, keeping mail appended since the
 * scan, under both locks, then writes the scan cache for the result.
 * Does nothing (and writes nothing) when no message is deleted, and
 * refuses (MB_TEMP) while a pending journal that does not fit this file
 * is kept (see update_recover in update.c).  After
 * it, the message list may describe the compacted file: only
 * mailbox_stat() and mailbox_close() are meant to follow.
 * Returns MB_OK, MB_TEMP, MB_LOCKED or MB_CHANGED.
 */
int	mailbox_update(struct mailbox *);

#endif
