/*
 * outcome.c: the outcomes of the commands and of opening a maildrop in
 * one table: each one's -ERR text and whose fault it is (the client's,
 * a wrong login, or neither: the mailbox or the server); and the one
 * mapping from a mailbox result (MB_) to an outcome.
 * Calls: nothing.
 */
#include <stddef.h>

#include "mailbox.h"
#include "outcome.h"

static const struct {
	const char	*text;		/* after "-ERR " */
	int		 kind;		/* O_ */
} outcomes[] = {
	[R_UNKNOWN]	= { "Unknown command.", O_CLIENT },
	[R_STATE]	= { "Command not valid in this state.", O_CLIENT },
	[R_ARG]		= { "Invalid argument.", O_CLIENT },
	[R_NUMBER]	= { "Invalid message number.", O_CLIENT },
	[R_NOMSG]	= { "No such message.", O_CLIENT },
	[R_DELETED]	= { "Message is deleted.", O_CLIENT },
	[R_LINES]	= { "Invalid line count.", O_CLIENT },
	[R_NOUSER]	= { "No user name given.", O_CLIENT },
	[R_AUTH]	= { "[AUTH] Authentication failed.", O_AUTH },
	[R_CANCEL]	= { "Authentication cancelled.", O_CLIENT },
	[R_BASE64]	= { "Invalid base64 data.", O_CLIENT },
	[R_MECH]	= {
	    "Unsupported authentication mechanism.", O_CLIENT },
	[R_TOOLONG]	= { "Line too long.", O_CLIENT },
	[R_NUL]		= { "NUL in command.", O_CLIENT },
	[R_INUSE]	= {
	    "[IN-USE] Mailbox is in use by another session.", O_SERVER },
	[R_LOCKED]	= {
	    "[SYS/TEMP] Mailbox is locked, try again later.", O_SERVER },
	[R_PERM]	= {
	    "[SYS/PERM] Mailbox is unreadable or malformed.", O_SERVER },
	[R_SYSTEMP]	= {
	    "[SYS/TEMP] Temporary server failure, try again later.", O_SERVER },
	[R_NOSTATE]	= { "[SYS/PERM] No usable state directory; see "
			    "--state-dir in pop3d(8).", O_SERVER },
	[R_CHANGED]	= {
	    "[SYS/TEMP] Mailbox was changed by another program.", O_SERVER },
	[R_UPDATE]	= { "[SYS/TEMP] Could not update the mailbox; "
			    "try again later.", O_SERVER },
	[R_TIMEOUT]	= { "Autologout; idle for too long.", O_SERVER },
	[R_BAD]		= { "Too many bad commands.", O_SERVER },
	[R_NEEDTLS]	= { "[AUTH] TLS is required for logins: use STLS "
			    "first.", O_CLIENT },
	[R_NOTLS]	= { "TLS is not available.", O_CLIENT },
	[R_TLSACTIVE]	= { "TLS is already active.", O_CLIENT },
	[R_PROXY]	= {
	    "PROXY header from an address not in --proxy-from.", O_SERVER },
};

const char *
outcome_text(int r)
{
	return outcomes[r].text;
}

int
outcome_kind(int r)
{
	return outcomes[r].kind;
}

int
outcome_mailbox(int mb)
{
	switch (mb) {
	case MB_OK:
		return R_SENT;
	case MB_CLIENT:
		return R_CLOSE;
	case MB_CHANGED:
		return R_CHANGED;
	case MB_LOCKED:
		return R_LOCKED;
	case MB_PERM:
		return R_PERM;
	default:
		return R_SYSTEMP;
	}
}
