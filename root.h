/*
 * root.h: root mode's session (root.c).
 */
#ifndef ROOT_H
#define ROOT_H

#include "session.h"

int	root_run(struct session *s);

#endif
