/*
 * mailbox_int.h: private to the mailbox files (mailbox.c scan.c uidl.c
 * lock.c cache.c update.c journal.c plan.c): struct msg, struct mailbox
 * and what these files call in each other.
 */
#ifndef MAILBOX_INT_H
#define MAILBOX_INT_H

#include <sys/stat.h>
#include <sys/types.h>
#include <stdint.h>
#include <time.h>

#include "mailbox.h"

#define MSG_DELETED	0x1
#define MSG_XUID	0x2		/* xuid holds a valid X-UID value */

/* One message; 64 octets. */
struct msg {
	off_t		 from;		/* its From_ line */
	off_t		 data;		/* first octet of the content */
	off_t		 end;		/* end of the content, separator excluded */
	uint64_t	 size;		/* octets as RETR sends them */
	uint64_t	 fp;		/* digest of the fp_len octets at from */
	uint32_t	 fp_len;	/* From_ line + header, capped */
	uint32_t	 flags;
	uint32_t	 xuid;		/* X-UID value (UIDL_XUID) */
	uint32_t	 suffix;	/* duplicate id: "-suffix"; 0: none */
	unsigned char	 digest[8];	/* popa3d UIDL octets, in print order */
};

struct mailbox {
	int		 fd;		/* -1: no file, an empty maildrop */
	int		 locked;
	int		 lock_timeout;
	enum uidl_mode	 mode;
	const char	*uidl_format;	/* UIDL_XUID ids: the template */
	unsigned	 max_messages;	/* scan no further */
	uint64_t	 max_bytes;	/* octets as STAT counts; 0: none */
	int		 journal_fd;	/* UPDATE journal, or -1 */
	int		 journal_held;	/* a journal that does not fit: no UPDATE */
	int		 cache_fd;	/* scan cache, or -1 */
	int		 capped;	/* the scan stopped at a cap */
	uint64_t	 scanned;	/* octets the last scan read */
	char		*path;
	char		*lockpath;
	dev_t		 dev;
	ino_t		 ino;
	off_t		 size;		/* size scanned */
	struct timespec	 mtime;		/* mtime scanned */
	struct msg	*msgs;
	char		**xuidl;	/* X-UIDL values (UIDL_XUIDL) or NULL */
	unsigned	 count, alloc;
	unsigned	 live;		/* messages not deleted */
	uint64_t	 live_octets;
	uint32_t	 uidvalidity;	/* from X-IMAPbase:/X-IMAP:, 0: none */
	uint32_t	 uidlast;	/* the same header's last UID, 0: none */
	int		 pseudo_ok;	/* a pseudo-message first may be hidden */
	int		 shared;	/* mailbox_opts.shared */
	int		 pseudo;	/* hidden pseudo-message at offset 0 */
	uint64_t	 pseudo_fp;
	uint32_t	 pseudo_fp_len;
	uint64_t	 tail_fp;
	uint32_t	 tail_len;
	unsigned char	*buf;		/* POP3D_BLOCK */
};

static inline size_t
min_size(size_t a, uint64_t b)
{
	return b < a ? (size_t)b : a;
}

/* scan.c */
int	scan_digest_at(struct mailbox *mb, off_t off, size_t len, uint64_t *v);
int	scan_fp_ok(struct mailbox *mb, off_t from, uint32_t len, uint64_t fp);
int	scan_from_valid(const unsigned char *line, size_t len);
int	scan_hdr_is(const unsigned char *h, size_t n, const char *name);
int	scan_file(struct mailbox *mb, off_t start, uint64_t octets);
int	scan_tail(struct mailbox *mb);

/* uidl.c */
void	uidl_unique(struct mailbox *mb);

/* mailbox.c: the device number that journal and cache record for the
 * file: 0 on shared storage, where it differs from host to host. */
uint64_t	mailbox_file_dev(const struct mailbox *mb, dev_t dev);

/* lock.c */
int	lock_take(struct mailbox *mb);
void	lock_release(struct mailbox *mb);
int	lock_settle(const struct mailbox *mb, long ms);

/* cache.c */
void	cache_write(struct mailbox *mb);
const char *cache_load(struct mailbox *mb, const struct stat *st, off_t *resume,
    uint64_t *octets, int *unchanged);
void	cache_after_update(struct mailbox *mb);

/* update.c */
int	update_compact(struct mailbox *mb, off_t cur);
int	update_recover(struct mailbox *mb, struct stat *st);

#endif
