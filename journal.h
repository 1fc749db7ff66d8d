/*
 * journal.h: private to update.c and journal.c: struct upd (one update
 * or recovery), the journal record, and the journal's functions.
 */
#ifndef JOURNAL_H
#define JOURNAL_H

#include <sys/stat.h>
#include <md5.h>

#include "mailbox_int.h"
#include "plan.h"

/* A record, followed by len octets of data. */
struct jrec {
	char		 magic[8];
	unsigned char	 hsum[MD5_DIGEST_LENGTH]; /* its header's sum */
	uint64_t	 seq;
	uint64_t	 pos, len;
	uint64_t	 gen;		/* 0: the header's plan, else this one: */
	uint64_t	 base;		/*   keep [0, base), then [ext, old) */
	uint64_t	 ext, old, tail_len;
	unsigned char	 tail[MD5_DIGEST_LENGTH];
	unsigned char	 sum[MD5_DIGEST_LENGTH]; /* record (sum 0) + data */
};

/* One update, or one recovery. */
struct upd {
	struct mailbox	*mb;
	int		 jfd;		/* -1: no journal */
	struct plan	 p;
	unsigned char	 hsum[MD5_DIGEST_LENGTH];
	off_t		 slot0;		/* offset of record slot 0 */
	uint64_t	 slotsz, slotcap;
	uint64_t	 seq;		/* of the last record written */
	uint64_t	 redo;		/* D */
	int		 written;	/* a mailbox octet may have changed */
	int		 dirty;		/* written since the last fsync */
	unsigned char	*buf;		/* one chunk */
	unsigned	 records;
	uint64_t	 journaled;	/* data octets in records */
};

int	journal_sync(struct upd *u);
int	journal_clear(struct upd *u);
int	journal_write(struct upd *u, uint64_t pos, uint64_t len);
int	journal_tail(struct mailbox *mb, const struct plan *p,
	    unsigned char *d);
int	journal_begin(struct upd *u);
const char *journal_load(struct upd *u, const struct stat *jst,
	    const struct stat *st, struct jrec *rec, int *have);

#endif
