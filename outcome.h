/*
 * outcome.h: outcomes of the command handlers and of maildrop_open
 * (R_), each with its -ERR text and kind (outcome.c).
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
	R_TIMEOUT, R_BAD, R_NEEDTLS, R_NOTLS, R_TLSACTIVE, R_PROXY,
	R_CLOSE		/* ends the session after the reply, if any */
};

/* Whose fault an outcome is: counted towards POP3D_MAX_BAD (O_CLIENT) or
 * POP3D_MAX_FAILS (O_AUTH), or neither (O_SERVER; O_NONE: no error). */
enum { O_NONE = 0, O_CLIENT, O_AUTH, O_SERVER };

/* The -ERR text of outcome r (an error, not R_SENT or R_CLOSE). */
const char	*outcome_text(int r);
/* Its O_ kind. */
int		 outcome_kind(int r);
/* The outcome of a mailbox result MB_: MB_OK is R_SENT, MB_CLIENT
 * R_CLOSE, MB_TEMP R_SYSTEMP, the others their R_ namesakes. */
int		 outcome_mailbox(int mb);

#endif
