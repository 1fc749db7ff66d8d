/*
 * priv.h: privilege drop and the confinement of the pre-auth child and
 * the TLS process (priv.c).
 */
#ifndef PRIV_H
#define PRIV_H

#include <pwd.h>

#include "auth.h"

int	priv_servable(const struct account *acct);
int	priv_drop(const struct account *acct);
void	priv_confine(int drop, uid_t uid, gid_t gid, int nofile,
	    const char *who);

#endif
