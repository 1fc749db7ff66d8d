/*
 * state.h: a maildrop's state files (state.c) and maildrop_open().
 */
#ifndef STATE_H
#define STATE_H

#include <limits.h>

#include "auth.h"
#include "mailbox.h"
#include "outcome.h"
#include "pop3d.h"

#define STATE_KEY_MAX	48

struct state {
	char	dir[PATH_MAX];
	char	key[STATE_KEY_MAX];	/* DEV-INO, hex */
	int	lock_fd, journal_fd, cache_fd;	/* -1: not open */
	int	wait_fd;	/* the lock where a waiting journal was left */
	int	pseudo_ok;	/* the note trusts a pseudo-message first */
	int	journal_held;	/* the former file's journal waits */
};

void	state_close(struct state *st);
int	maildrop_open(const struct config *cfg, const struct account *acct,
    struct state *st, struct mailbox **mbp);

#endif
