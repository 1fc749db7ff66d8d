/*
 * outcome.h: outcomes of the command handlers and of maildrop_open
 * (R_), each with its -ERR text in session.c.
 */
#ifndef OUTCOME_H
#define OUTCOME_H

/* Outcomes of a command handler.  R_SENT: the handler wrote its +OK reply;
 * every other value is an error that the dispatcher answers. */
enum {
	R_SENT = 0,
	R_UNKNOWN, R_STATE, R_ARG, R_NUMBER, R_NOMSG, R_DELETED, R_LINES,
	R_NOUSER, R_AUTH, R_CANCEL, R_BASE64, R_MECH, R_TOOLONG, R_NUL,
	R_INUSE, R_LOCKED, R_PERM, R_SYSTEMP, R_NOSTATE, R_CHANGED, R_UPDATE,
	R_TIMEOUT, R_BAD,
	R_CLOSE		/* ends the session after the reply, if any */
};


#endif
