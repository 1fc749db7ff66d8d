/*
 * priv.h: privilege drop and the pre-auth child's confinement (priv.c).
 */
#ifndef PRIV_H
#define PRIV_H

#include <pwd.h>

#include "auth.h"

int	priv_servable(const struct account *acct);
int	priv_drop(const struct account *acct);
void	priv_confine_child(const struct passwd *pw);

#endif
