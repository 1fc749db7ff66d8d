/*
 * pop3d.c: one POP3 session on an input and an output fd.  main() and the
 * privilege flow, the command table and the handlers.
 *
 * Root mode: a chrooted child running as the unprivileged user reads the
 * AUTHORIZATION state and sends each login attempt to the parent over a
 * socketpair; the parent checks it, takes the session lock, drops to the
 * user for good and runs the TRANSACTION and UPDATE states.  User mode:
 * the same states in one process, with no privilege changes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <md5.h>

#include "auth.h"
#include "io.h"
#include "mailbox.h"
#include "pop3d.h"

enum { ST_AUTH = 1, ST_TRANS = 2 };

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

static const char *const errtext[] = {
	[R_UNKNOWN]	= "Unknown command.",
	[R_STATE]	= "Command not valid in this state.",
	[R_ARG]		= "Invalid argument.",
	[R_NUMBER]	= "Invalid message number.",
	[R_NOMSG]	= "No such message.",
	[R_DELETED]	= "Message is deleted.",
	[R_LINES]	= "Invalid line count.",
	[R_NOUSER]	= "No user name given.",
	[R_AUTH]	= "[AUTH] Authentication failed.",
	[R_CANCEL]	= "Authentication cancelled.",
	[R_BASE64]	= "Invalid base64 data.",
	[R_MECH]	= "Unsupported authentication mechanism.",
	[R_TOOLONG]	= "Line too long.",
	[R_NUL]		= "NUL in command.",
	[R_INUSE]	= "[IN-USE] Mailbox is in use by another session.",
	[R_LOCKED]	= "[SYS/TEMP] Mailbox is locked, try again later.",
	[R_PERM]	= "[SYS/PERM] Mailbox is unreadable or malformed.",
	[R_SYSTEMP]	= "[SYS/TEMP] Temporary server failure, try again later.",
	[R_NOSTATE]	= "[SYS/PERM] No usable state directory; see "
			  "--state-dir in pop3d(8).",
	[R_CHANGED]	= "[SYS/TEMP] Mailbox was changed by another program.",
	[R_UPDATE]	= "[SYS/TEMP] Could not update the mailbox; "
			  "try again later.",
	[R_TIMEOUT]	= "Autologout; idle for too long.",
	[R_BAD]		= "Too many bad commands.",
};

#define STATE_KEY_MAX	48

struct state {
	char	dir[PATH_MAX];
	char	key[STATE_KEY_MAX];	/* DEV-INO, hex */
	int	lock_fd, journal_fd, cache_fd;	/* -1: not open */
	int	wait_fd;	/* the lock where a waiting journal was left */
	int	pseudo_ok;	/* the note trusts a pseudo-message first */
	int	journal_held;	/* the former file's journal waits */
};

struct session {
	const struct config	*cfg;
	struct io_limit		 limit;		/* of every wait for the client */
	struct in		 in;
	struct out		 out;
	int			 state;
	int			 priv_fd;	/* to the parent, in the child */
	int			 fails, bad;
	int			 done;		/* QUIT or a fatal reply */
	const char		*how;		/* how it ended, for the log */
	char			 user[POP3D_USER_MAX + 1];
	int			 have_user;
	const char		*rhost;
	struct account		 acct;
	struct mailbox		*mb;
	uint64_t		 total_bytes;	/* at login, for the log */
	struct state		 st;		/* the account's state files */
	unsigned		 retr_n, del_n;
	uint64_t		 retr_bytes, del_bytes;
};

/* The session's log identity: the login name escaped, or "-". */
static const char *
log_user(const struct session *s, char *buf, size_t size)
{
	if (s->acct.name[0] != '\0')
		return log_escape(buf, size, s->acct.name,
		    strlen(s->acct.name));
	if (s->have_user)
		return log_escape(buf, size, s->user, strlen(s->user));
	return "-";
}

/* Writes a positive status line. */
static void __attribute__((format(printf, 2, 3)))
reply_ok(struct session *s, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	out_printf(&s->out, "+OK%s%s\r\n", buf[0] ? " " : "", buf);
}

/*
 * Parses a decimal number: digits only, no sign or space, at most max.
 * Returns 0 with *v set, or -1.
 */
int
parse_number(const char *p, unsigned long max, unsigned long *v)
{
	unsigned long n = 0;

	if (*p == '\0')
		return -1;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' ||
		    __builtin_mul_overflow(n, 10UL, &n) ||
		    __builtin_add_overflow(n, (unsigned long)(*p - '0'), &n))
			return -1;
	}
	if (n > max)
		return -1;
	*v = n;
	return 0;
}

/* Resolves a message-number argument to a live message. Returns R_SENT with
 * *n set, or the error. */
static int
message_arg(struct session *s, const char *arg, unsigned *n)
{
	unsigned long v;

	if (arg == NULL || parse_number(arg, UINT_MAX, &v) < 0)
		return R_NUMBER;
	if (v == 0 || v > mailbox_count(s->mb))
		return R_NOMSG;
	if (mailbox_is_deleted(s->mb, (unsigned)v))
		return R_DELETED;
	*n = (unsigned)v;
	return R_SENT;
}

/* Maps a mailbox outcome to a reply; a changed or failing mailbox ends
 * the session. */
static int
mailbox_result(struct session *s, int r)
{
	switch (r) {
	case MB_OK:
		return R_SENT;
	case MB_CLIENT:
		s->done = 1;
		s->how = s->out.timedout ? "timeout" : "disconnect";
		return R_CLOSE;
	case MB_CHANGED:
		s->done = 1;
		s->how = "aborted";
		return R_CHANGED;
	case MB_PERM:
		s->done = 1;
		s->how = "aborted";
		return R_PERM;
	default:
		s->done = 1;
		s->how = "aborted";
		return R_SYSTEMP;
	}
}

/* ---- AUTHORIZATION ---------------------------------------------------- */

static int	login(struct session *, const char *user, char *pass);

static int
cmd_user(struct session *s, char *arg)
{
	if (arg == NULL || arg[0] == '\0')
		return R_NOUSER;
	/* Any name is taken here; PASS answers the same for all. */
	snprintf(s->user, sizeof(s->user), "%s", arg);
	s->have_user = strlen(arg) <= POP3D_USER_MAX ? 1 : -1;
	reply_ok(s, "%s", "");
	return R_SENT;
}

static int
cmd_pass(struct session *s, char *arg)
{
	char none[1] = "";
	int r;

	if (!s->have_user)
		return R_NOUSER;
	r = login(s, s->have_user > 0 ? s->user : "", arg ? arg : none);
	s->have_user = 0;
	return r;
}

/* Decodes strict base64 (RFC 4648, padding required) in place.  Returns
 * the decoded length, or -1. */
static long
base64_decode(char *s)
{
	static const char alpha[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t len = strlen(s), i, o = 0;

	if (len % 4 != 0)
		return -1;
	for (i = 0; i < len; i += 4) {
		unsigned long v = 0;
		int j, pad = 0;

		for (j = 0; j < 4; j++) {
			const char *c = s[i + (size_t)j] != '\0' ?
			    strchr(alpha, s[i + (size_t)j]) : NULL;

			if (s[i + (size_t)j] == '=' && i + 4 == len && j >= 2 &&
			    (j == 3 || s[i + 3] == '='))
				pad++;
			else if (c == NULL || pad)
				return -1;
			v = v << 6 | (c ? (unsigned long)(c - alpha) : 0);
		}
		s[o++] = (char)(v >> 16);
		if (pad < 2)
			s[o++] = (char)(v >> 8 & 0xff);
		if (pad < 1)
			s[o++] = (char)(v & 0xff);
	}
	return (long)o;
}

/*
 * Checks a SASL PLAIN message (RFC 4616: [authzid] NUL authcid NUL
 * passwd) and tries the login.  An authzid must name the same user.
 */
static int
sasl_plain(struct session *s, char *b64)
{
	char *authzid, *authcid, *pass, *end, none[1] = "";
	long len = base64_decode(b64);
	int r;

	if (len < 0) {
		explicit_bzero(b64, strlen(b64));
		return R_BASE64;
	}
	end = b64 + len;
	authzid = b64;
	authcid = memchr(authzid, '\0', (size_t)(end - authzid));
	pass = authcid ? memchr(authcid + 1, '\0',
	    (size_t)(end - authcid - 1)) : NULL;
	if (pass == NULL || memchr(pass + 1, '\0',
	    (size_t)(end - pass - 1)) != NULL) {
		explicit_bzero(b64, (size_t)len);
		return login(s, "", none);
	}
	authcid++;
	*end = '\0';
	pass++;
	if (authzid[0] != '\0' && strcmp(authzid, authcid) != 0)
		authcid = none;		/* fails like a wrong password */
	r = login(s, authcid, pass);
	explicit_bzero(b64, (size_t)len);
	return r;
}

static int
cmd_auth(struct session *s, char *arg)
{
	char line[POP3D_SASL_LINE_MAX + 1], *ir = NULL, *sp, none[1] = "";
	int r;

	if (arg == NULL) {
		reply_ok(s, "%s", "");
		out_str(&s->out, "PLAIN\r\n.\r\n");
		return R_SENT;
	}
	if ((sp = strchr(arg, ' ')) != NULL) {
		*sp = '\0';
		ir = sp + 1;
	}
	if (strcasecmp(arg, "PLAIN") != 0)
		return R_MECH;
	if (ir != NULL && strcmp(ir, "*") == 0)
		return R_CANCEL;
	if (ir != NULL)
		return sasl_plain(s, strcmp(ir, "=") == 0 ? none : ir);
	out_str(&s->out, "+ \r\n");
	r = in_line(&s->in, &s->out, line, POP3D_SASL_LINE_MAX);
	if (r == IN_LONG || r == IN_NUL)
		return r == IN_LONG ? R_TOOLONG : R_NUL;
	if (r != IN_LINE) {
		s->done = 1;
		s->how = r == IN_TIMEOUT ? "timeout" : "disconnect";
		return R_CLOSE;
	}
	if (strcmp(line, "*") == 0)
		return R_CANCEL;
	r = sasl_plain(s, line);
	explicit_bzero(line, sizeof(line));
	return r;
}

/* ---- TRANSACTION ------------------------------------------------------ */

static int
cmd_stat(struct session *s, char *arg)
{
	unsigned n;
	uint64_t octets;

	(void)arg;
	mailbox_stat(s->mb, &n, &octets);
	reply_ok(s, "%u %llu", n, (unsigned long long)octets);
	return R_SENT;
}

static int
cmd_list(struct session *s, char *arg)
{
	unsigned i, n;
	uint64_t octets;
	int r;

	if (arg != NULL) {
		if ((r = message_arg(s, arg, &n)) != R_SENT)
			return r;
		reply_ok(s, "%u %llu", n,
		    (unsigned long long)mailbox_size(s->mb, n));
		return R_SENT;
	}
	mailbox_stat(s->mb, &n, &octets);
	reply_ok(s, "%u messages:", n);
	for (i = 1; i <= mailbox_count(s->mb); i++)
		if (!mailbox_is_deleted(s->mb, i))
			out_printf(&s->out, "%u %llu\r\n", i,
			    (unsigned long long)mailbox_size(s->mb, i));
	out_str(&s->out, ".\r\n");
	return R_SENT;
}

static int
cmd_uidl(struct session *s, char *arg)
{
	char uid[POP3D_UIDL_MAX + 1];
	unsigned i, n;
	int r;

	if (arg != NULL) {
		if ((r = message_arg(s, arg, &n)) != R_SENT)
			return r;
		mailbox_uidl(s->mb, n, uid);
		reply_ok(s, "%u %s", n, uid);
		return R_SENT;
	}
	reply_ok(s, "%s", "");
	for (i = 1; i <= mailbox_count(s->mb); i++)
		if (!mailbox_is_deleted(s->mb, i)) {
			mailbox_uidl(s->mb, i, uid);
			out_printf(&s->out, "%u %s\r\n", i, uid);
		}
	out_str(&s->out, ".\r\n");
	return R_SENT;
}

/* RETR and TOP: lines < 0 sends the whole message. */
static int
send_message(struct session *s, unsigned n, long lines)
{
	int r = mailbox_check(s->mb, n);

	if (r != MB_OK)
		return mailbox_result(s, r);
	if (lines < 0)
		reply_ok(s, "%llu octets",
		    (unsigned long long)mailbox_size(s->mb, n));
	else
		reply_ok(s, "%s", "");
	r = mailbox_send(s->mb, n, lines, &s->out);
	if (r == MB_OK && lines < 0) {
		s->retr_n++;
		s->retr_bytes += mailbox_size(s->mb, n);
	}
	if (r == MB_OK)
		r = out_flush(&s->out) < 0 ? MB_CLIENT : MB_OK;
	if (r != MB_OK) {
		/* the +OK is out: nothing sensible can follow it */
		mailbox_result(s, r);
		return R_CLOSE;
	}
	return R_SENT;
}

static int
cmd_retr(struct session *s, char *arg)
{
	unsigned n;
	int r = message_arg(s, arg, &n);

	return r != R_SENT ? r : send_message(s, n, -1);
}

static int
cmd_top(struct session *s, char *arg)
{
	unsigned long lines;
	char *sp = arg ? strchr(arg, ' ') : NULL;
	unsigned n;
	int r;

	if (sp == NULL)
		return R_ARG;
	*sp = '\0';
	if ((r = message_arg(s, arg, &n)) != R_SENT)
		return r;
	if (parse_number(sp + 1, LONG_MAX, &lines) < 0)
		return R_LINES;
	return send_message(s, n, (long)lines);
}

static int
cmd_dele(struct session *s, char *arg)
{
	unsigned n;
	int r = message_arg(s, arg, &n);

	if (r != R_SENT)
		return r;
	mailbox_delete(s->mb, n);
	reply_ok(s, "Marked to be deleted.");
	return R_SENT;
}

static int
cmd_rset(struct session *s, char *arg)
{
	(void)arg;
	mailbox_reset(s->mb);
	reply_ok(s, "%s", "");
	return R_SENT;
}

static int
cmd_noop(struct session *s, char *arg)
{
	(void)arg;
	reply_ok(s, "%s", "");
	return R_SENT;
}

/* QUIT: in TRANSACTION it enters UPDATE (RFC 1939 section 6). */
static int
cmd_quit(struct session *s, char *arg)
{
	unsigned n, del;
	uint64_t octets;
	int r;

	(void)arg;
	s->done = 1;
	s->how = "quit";
	if (s->state != ST_TRANS) {
		reply_ok(s, "Logging out.");
		return R_SENT;
	}
	mailbox_stat(s->mb, &n, &octets);
	if (n == mailbox_count(s->mb)) {
		reply_ok(s, "Logging out.");
		return R_SENT;
	}
	del = mailbox_count(s->mb) - n;
	r = mailbox_update(s->mb);	/* may renumber what it kept */
	if (r == MB_OK) {
		s->del_n = del;
		s->del_bytes = s->total_bytes - octets;
		reply_ok(s, "Logging out, messages deleted.");
		return R_SENT;
	}
	s->how = "aborted";
	return r == MB_CHANGED ? R_CHANGED : R_UPDATE;
}

static int
cmd_capa(struct session *s, char *arg)
{
	(void)arg;
	reply_ok(s, "Capability list follows");
	out_str(&s->out, "TOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nSASL PLAIN\r\n");
	if (s->state == ST_TRANS)
		out_str(&s->out, "IMPLEMENTATION pop3d " POP3D_VERSION "\r\n");
	out_str(&s->out, ".\r\n");
	return R_SENT;
}

/* Flags of the command table. */
#define A_NONE	1	/* takes no argument */
#define A_NEED	2	/* needs an argument */

static const struct command {
	const char	*name;
	int		(*fn)(struct session *, char *);
	int		 states;
	int		 args;
} commands[] = {
	{ "USER", cmd_user, ST_AUTH,		A_NEED },
	{ "PASS", cmd_pass, ST_AUTH,		0 },
	{ "AUTH", cmd_auth, ST_AUTH,		0 },
	{ "CAPA", cmd_capa, ST_AUTH | ST_TRANS,	A_NONE },
	{ "QUIT", cmd_quit, ST_AUTH | ST_TRANS,	A_NONE },
	{ "STAT", cmd_stat, ST_TRANS,		A_NONE },
	{ "LIST", cmd_list, ST_TRANS,		0 },
	{ "UIDL", cmd_uidl, ST_TRANS,		0 },
	{ "RETR", cmd_retr, ST_TRANS,		A_NEED },
	{ "TOP",  cmd_top,  ST_TRANS,		A_NEED },
	{ "DELE", cmd_dele, ST_TRANS,		A_NEED },
	{ "RSET", cmd_rset, ST_TRANS,		A_NONE },
	{ "NOOP", cmd_noop, ST_TRANS,		A_NONE },
};

/*
 * Writes the -ERR reply for r and counts it: wrong credentials towards
 * POP3D_MAX_FAILS, other client mistakes towards POP3D_MAX_BAD.
 */
static void
error_reply(struct session *s, int r)
{
	if (r == R_SENT || r == R_CLOSE)
		return;
	if (r == R_AUTH && ++s->fails >= POP3D_MAX_FAILS) {
		s->done = 1;
		s->how = "auth failures";
	} else if (r <= R_NUL && r != R_AUTH) {	/* the client's mistakes */
		if (++s->bad >= POP3D_MAX_BAD) {
			r = R_BAD;
			s->done = 1;
			s->how = "bad commands";
		}
	}
	out_printf(&s->out, "-ERR %s\r\n", errtext[r]);
}

/* Runs one command line and writes its -ERR reply if it failed. */
static void
dispatch(struct session *s, char *line)
{
	const struct command *c = NULL;
	char *arg = strchr(line, ' ');
	size_t i;
	int r;

	if (arg != NULL)
		*arg++ = '\0';
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcasecmp(line, commands[i].name) == 0) {
			c = &commands[i];
			break;
		}
	/* "STAT " is STAT; only a password may be empty */
	if (arg != NULL && arg[0] == '\0' && c != NULL && c->fn != cmd_pass)
		arg = NULL;
	if (c == NULL)
		r = R_UNKNOWN;
	else if (!(c->states & s->state))
		r = R_STATE;
	else if ((c->args & A_NONE && arg != NULL) ||
	    (c->args & A_NEED && arg == NULL))
		r = R_ARG;
	else
		r = c->fn(s, arg);
	if (arg != NULL && c != NULL && (c->fn == cmd_pass ||
	    c->fn == cmd_auth))
		explicit_bzero(arg, strlen(arg));
	error_reply(s, r);
}

/*
 * The one rule for how long the client may keep the session waiting, for
 * input or for room to write: before login the whole AUTHORIZATION state
 * within --auth-timeout of the connect (so cheap commands and a client
 * that stops reading use up the same budget); after login each wait,
 * --idle-timeout.
 */
static void
session_limit(struct session *s, int64_t connected)
{
	if (s->state == ST_TRANS) {
		s->limit.end = 0;
		s->limit.idle = s->cfg->idle_timeout;
	} else {
		s->limit.end = connected + (int64_t)s->cfg->auth_timeout * 1000;
		s->limit.idle = 0;
	}
}

/* Reads and runs commands until the session ends. */
static void
session_loop(struct session *s)
{
	char line[POP3D_LINE_MAX + 1];

	while (!s->done) {
		switch (in_line(&s->in, &s->out, line, POP3D_LINE_MAX)) {
		case IN_LINE:
			dispatch(s, line);
			break;
		case IN_LONG:
			error_reply(s, R_TOOLONG);
			break;
		case IN_NUL:
			error_reply(s, R_NUL);
			break;
		case IN_TIMEOUT:
			error_reply(s, R_TIMEOUT);
			s->done = 1;
			s->how = "timeout";
			break;
		default:
			s->done = 1;
			s->how = "disconnect";
			break;
		}
	}
	explicit_bzero(line, sizeof(line));
	out_flush(&s->out);
}

/* ---- privileges and locks --------------------------------------------- */

/* The gid of group mail, which can write every spool; -1 if none. */
static gid_t
mail_gid(void)
{
	const struct group *mail = getgrnam("mail");

	return mail ? mail->gr_gid : (gid_t)-1;
}

/* May a session run as acct?  Never as uid 0 or with gid 0 or mail.
 * Returns 1, or 0 (logged). */
static int
account_servable(const struct account *acct)
{
	if (acct->uid != 0 && acct->gid != 0 && acct->gid != mail_gid())
		return 1;
	logmsg(LOG_ERR, "refusing to serve uid %lu gid %lu",
	    (unsigned long)acct->uid, (unsigned long)acct->gid);
	return 0;
}

/*
 * Becomes the user of acct for good: supplementary groups without gid
 * mail, then gid, then uid, and checks that root cannot come back.
 * Returns 0, or -1 when the account must not be served.
 */
static int
drop_privileges(const struct account *acct)
{
	gid_t mailgid = mail_gid();
	long max = sysconf(_SC_NGROUPS_MAX);
	int ng = max > 0 && max < 65536 ? (int)max : 65536, i, k;
	gid_t *groups;

	if (!account_servable(acct))
		return -1;
	groups = xreallocarray(NULL, (size_t)ng, sizeof(gid_t));
	if (getgrouplist(acct->system_name, acct->gid, groups, &ng) < 0)
		fatalx("too many groups for %s", acct->system_name);
	for (i = k = 0; i < ng; i++)
		if (groups[i] != mailgid && groups[i] != 0)
			groups[k++] = groups[i];
	if (setgroups((size_t)k, groups) < 0 ||
	    setresgid(acct->gid, acct->gid, acct->gid) < 0 ||
	    setresuid(acct->uid, acct->uid, acct->uid) < 0)
		fatal("dropping privileges");
	free(groups);
	if (setuid(0) == 0 || getuid() != acct->uid ||
	    geteuid() != acct->uid || getgid() != acct->gid ||
	    getegid() != acct->gid)
		fatalx("privileges were not dropped");
	return 0;
}

/* ---- state files ------------------------------------------------------ */

/*
 * The state of a maildrop file (session lock, UPDATE journal, scan cache)
 * lives in a directory of its user's alone, in files named after the
 * device and inode of the file as the user opened it (the session runs
 * as the user by then): KEY.lock (flock: one session per maildrop however
 * it is named; it also holds a note), KEY.journal and KEY.cache.  A user
 * reaches only the state of files she owns, in her own directory, and no
 * path is ever resolved with privileges.  path-DIGEST (the MD5 of the
 * maildrop path as the template gives it) is a symlink to the KEY that
 * path named last: once the path names another file, the old file's
 * state is removed, unless its journal still waits (then no UPDATE until
 * an administrator looks).  So a user's directory holds one set of files
 * per maildrop, plus journals that wait.
 */

/* Syncs directory dir after a name was made in it, so that a power cut
 * cannot take the name back while the file's own fsync stands (POSIX asks
 * for it; ext4, XFS and btrfs persist the name with the file anyway). */
static void
sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		logmsg(LOG_ERR, "%s: fsync: %m", dir);
	if (fd >= 0)
		close(fd);
}

/* mkdir(path, mode), and the parent synced when it made the name.
 * Returns 0 (made, or there already), or -1. */
static int
make_dir(const char *path, mode_t mode)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (mkdir(path, mode) < 0)
		return errno == EEXIST ? 0 : -1;
	(void)chmod(path, mode);			/* umask 077 */
	if (slash != NULL && (size_t)(slash - path) < sizeof(parent)) {
		memcpy(parent, path, (size_t)(slash - path));
		parent[slash - path] = '\0';
		sync_dir(slash == path ? "/" : parent);
	}
	return 0;
}

/* Is path a directory that no one but owner (or root, when root_ok)
 * can change? */
static int
dir_closed(const char *path, uid_t owner, int root_ok)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
	    (st.st_uid == owner || (root_ok && st.st_uid == 0)) &&
	    (st.st_mode & 022) == 0;
}

/*
 * Root mode, before the privilege drop: the system state directory
 * (--state-dir or POP3D_STATE_DIR: root's, writable by no one else; made
 * 0711 when missing, and searchable) and in it UID/, the user's own.
 * Returns 0, or -1.
 */
static int
state_prepare(const struct config *cfg, const struct account *acct)
{
	const char *base = cfg->state_dir ? cfg->state_dir : POP3D_STATE_DIR;
	char dir[PATH_MAX];
	struct stat st;
	int fd, n;

	if (make_dir(base, 0711) < 0 || !dir_closed(base, 0, 0) ||
	    lstat(base, &st) < 0 ||
	    ((st.st_mode & 0111) != 0111 &&
	    chmod(base, (st.st_mode & 07777) | 0111) < 0)) {
		logmsg(LOG_ERR, "%s: not a state directory of root's", base);
		return -1;
	}
	n = snprintf(dir, sizeof(dir), "%s/%lu", base,
	    (unsigned long)acct->uid);
	if (n < 0 || (size_t)n >= sizeof(dir) || make_dir(dir, 0700) < 0)
		return -1;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 &&
	    (st.st_uid == 0 || st.st_uid == acct->uid) &&
	    fchown(fd, acct->uid, acct->gid) == 0 && fchmod(fd, 0700) == 0) {
		close(fd);
		return 0;
	}
	logmsg(LOG_ERR, "%s: unusable state directory", dir);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A place for state: parent/leaf. */
struct cand {
	char	parent[PATH_MAX];
	char	leaf[64];
	int	primary;	/* may hold the lock (and be made) */
};

#define STATE_CANDS	5

static void
cand_set(struct cand *c, const char *parent, const char *leaf, int primary)
{
	snprintf(c->parent, sizeof(c->parent), "%s", parent);
	snprintf(c->leaf, sizeof(c->leaf), "%s", leaf);
	c->primary = primary;
}

/* dir as a place for state: UID/ in it when it is root's (the system
 * layout), else the directory itself. */
static void
cand_layout(struct cand *c, const char *dir, const struct account *acct,
    int primary)
{
	char uid[32], *slash;

	snprintf(uid, sizeof(uid), "%lu", (unsigned long)acct->uid);
	cand_set(c, dir, uid, primary);
	if (!dir_closed(dir, 0, 0) && (slash = strrchr(c->parent, '/'))) {
		snprintf(c->leaf, sizeof(c->leaf), "%s", slash + 1);
		slash[slash == c->parent] = '\0';	/* "/x" -> "/" */
	}
}

/*
 * Where a maildrop's state may live, in order.  The lock lives in the
 * first primary place that works: with --state-dir only that one; as
 * root, UID/ in POP3D_STATE_DIR; run by hand, UID/ in POP3D_STATE_DIR
 * (made by root mode: the two modes then share it), .pop3d in the passwd
 * entry's home (not $HOME, which su and setpriv may leave at /root),
 * pop3d in $XDG_STATE_HOME, .pop3d-state beside the maildrop.  Every
 * place, primary or not, is searched for a journal a killed session left.
 * Returns the count.
 */
static int
state_candidates(const struct config *cfg, const struct account *acct,
    struct cand *c)
{
	const struct passwd *pw = getpwuid(geteuid());
	const char *xdg = getenv("XDG_STATE_HOME");
	int named = cfg->state_dir != NULL, mine = !named && !cfg->root, k = 0;
	char dir[PATH_MAX], *slash;

	if (named)
		cand_layout(&c[k++], cfg->state_dir, acct, 1);
	if (!named || strcmp(cfg->state_dir, POP3D_STATE_DIR) != 0)
		cand_layout(&c[k++], POP3D_STATE_DIR, acct, !named);
	if (pw != NULL && pw->pw_dir[0] == '/')
		cand_set(&c[k++], pw->pw_dir, ".pop3d", mine);
	if (xdg != NULL && xdg[0] == '/' && !cfg->root)
		cand_set(&c[k++], xdg, "pop3d", mine);
	snprintf(dir, sizeof(dir), "%s", acct->mailbox);
	if ((slash = strrchr(dir, '/')) != NULL) {
		slash[slash == dir] = '\0';
		cand_set(&c[k++], dir, ".pop3d-state", mine);
	}
	return k;
}

/*
 * Is the place c a directory of ours alone (made, when create, if
 * missing)?  Its parent must be ours or root's and writable by no one
 * else, so that no other user can have made or replaced it (unless the
 * user named it herself with --state-dir: named).  Returns 0 with buf
 * set, or -1.
 */
static int
cand_dir(const struct cand *c, int create, int named, char *buf,
    size_t size)
{
	int n;

	if (!named && !dir_closed(c->parent, geteuid(), 1))
		return -1;
	n = snprintf(buf, size, "%s/%s", strcmp(c->parent, "/") == 0 ? "" :
	    c->parent, c->leaf);
	if (n < 0 || (size_t)n >= size || (create && make_dir(buf, 0700) < 0))
		return -1;
	return dir_closed(buf, geteuid(), 0) ? 0 : -1;
}

/* dir/key.ext as a path. */
static const char *
state_path(const char *dir, const char *key, const char *ext, char *buf,
    size_t size)
{
	int n = snprintf(buf, size, "%s/%s.%s", dir, key, ext);

	return n > 0 && (size_t)n < size ? buf : NULL;
}

/* Does dir hold a journal of key that waits? */
static int
journal_waits(const char *dir, const char *key)
{
	char path[PATH_MAX];
	struct stat st;

	return state_path(dir, key, "journal", path, sizeof(path)) != NULL &&
	    lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* Opens (creating) a state file: a regular file of ours with one link.
 * Returns the fd or -1. */
static int
state_file(const char *dir, const char *key, const char *ext)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd = -1;

	if (state_path(dir, key, ext, path, sizeof(path)) != NULL)
		fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY |
		    O_CLOEXEC, 0600);
	if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_nlink == 1 && sb.st_uid == geteuid())
		return fd;
	logmsg(LOG_ERR, "%s/%s.%s: unsafe or unusable state file", dir, key,
	    ext);
	if (fd >= 0)
		close(fd);
	return -1;
}

/*
 * Takes the flock on dir/key.lock.  Since the state of a replaced file is
 * removed (under this lock), the lock counts only while the name still
 * leads to the locked file.  Returns the fd, -1 when another session
 * holds it (EWOULDBLOCK), or -2.
 */
static int
state_flock(const char *dir, const char *key)
{
	char path[PATH_MAX];
	struct stat a, b;
	int fd, tries;

	if (state_path(dir, key, "lock", path, sizeof(path)) == NULL)
		return -2;
	for (tries = 0; tries < 3; tries++) {
		if ((fd = state_file(dir, key, "lock")) < 0)
			return -2;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			return errno == EWOULDBLOCK ? -1 : -2;
		}
		if (fstat(fd, &a) == 0 && lstat(path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return fd;
		close(fd);			/* removed meanwhile */
	}
	return -2;
}

/* Is key the form state keys take (DEV-INO in hex)? */
static int
state_key_ok(const char *key)
{
	size_t n = strspn(key, "0123456789abcdef-");

	return n > 0 && key[n] == '\0' && n < STATE_KEY_MAX;
}

/*
 * The path of this maildrop named another file last time (replaced
 * since): removes that file's state under its lock, or, when its journal
 * waits, keeps it and holds back UPDATE; leaves it alone while another
 * session holds it, or on any error.  Then points path-DIGEST at our key.
 */
static void
state_retire(struct state *st, const struct account *acct)
{
	static const char hex[] = "0123456789abcdef";
	static const char *const ext[] = { "cache", "journal", "lock" };
	char link[PATH_MAX], tmp[PATH_MAX + 8], old[STATE_KEY_MAX];
	char name[8 + 2 * MD5_DIGEST_LENGTH], p[PATH_MAX];
	unsigned char d[MD5_DIGEST_LENGTH];
	MD5_CTX ctx;
	ssize_t n;
	size_t i;
	int fd;

	MD5Init(&ctx);
	MD5Update(&ctx, (const unsigned char *)acct->mailbox,
	    strlen(acct->mailbox));
	MD5Final(d, &ctx);
	memcpy(name, "path-", 5);
	for (i = 0; i < sizeof(d); i++) {
		name[5 + 2 * i] = hex[d[i] >> 4];
		name[6 + 2 * i] = hex[d[i] & 15];
	}
	name[5 + 2 * sizeof(d)] = '\0';
	n = snprintf(link, sizeof(link), "%s/%s", st->dir, name);
	if (n < 0 || (size_t)n >= sizeof(link))
		return;
	n = readlink(link, old, sizeof(old) - 1);
	old[n > 0 ? n : 0] = '\0';
	if (strcmp(old, st->key) == 0)
		return;
	if (state_key_ok(old)) {
		if ((fd = state_flock(st->dir, old)) < 0)
			return;		/* a session on the old file, or trouble */
		if (journal_waits(st->dir, old)) {
			logmsg(LOG_ERR, "%s: the journal %s/%s.journal of the "
			    "file this path named before waits; no UPDATE "
			    "until an administrator resolves it (README, "
			    "State files)", acct->mailbox, st->dir, old);
			st->journal_held = 1;
			close(fd);
			return;
		}
		for (i = 0; i < 3; i++)
			if (state_path(st->dir, old, ext[i], p, sizeof(p)))
				(void)unlink(p);
		close(fd);
	}
	(void)snprintf(tmp, sizeof(tmp), "%s.new", link);	/* fits */
	(void)unlink(tmp);
	if (symlink(st->key, tmp) < 0 || rename(tmp, link) < 0)
		logmsg(LOG_WARNING, "%s: %s", link, strerror(errno));
}

/*
 * Takes the state of the maildrop file opened as fd (the session runs as
 * the user): the lock, in the first primary place that works; the
 * journal, from any place where a killed session left one of this file
 * (then under that place's lock too), else the lock's place; the cache
 * (only a hint: -1 when it cannot be opened); and the note the last
 * session left.  Returns R_SENT, R_INUSE, R_SYSTEMP or R_NOSTATE.
 */
static int
state_lock(const struct config *cfg, const struct account *acct, int fd,
    struct state *st)
{
	struct cand c[STATE_CANDS];
	int n = state_candidates(cfg, acct, c), named = !cfg->root &&
	    cfg->state_dir != NULL, i;
	char jdir[PATH_MAX], path[PATH_MAX], note[64];
	struct stat sb;
	ssize_t got;
	int fresh;

	if (fstat(fd, &sb) < 0)
		return R_SYSTEMP;
	snprintf(st->key, sizeof(st->key), "%llx-%llx",
	    (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino);
	for (i = 0; i < n; i++)
		if (c[i].primary && cand_dir(&c[i], 1, named, st->dir,
		    sizeof(st->dir)) == 0)
			break;
	if (i == n) {
		logmsg(LOG_ERR, "no usable state directory for %s (session "
		    "lock, journal, scan cache); name one with --state-dir",
		    acct->mailbox);
		return R_NOSTATE;
	}
	if ((st->lock_fd = state_flock(st->dir, st->key)) < 0)
		return st->lock_fd == -1 ? R_INUSE : R_SYSTEMP;
	got = pread(st->lock_fd, note, sizeof(note) - 1, 0);
	note[got > 0 ? got : 0] = '\0';
	st->pseudo_ok = got == 0 || strncmp(note, "pseudo=yes\n", 11) == 0;
	snprintf(jdir, sizeof(jdir), "%s", st->dir);
	for (i = 0; i < n && !journal_waits(st->dir, st->key); i++) {
		if (cand_dir(&c[i], 0, named, jdir, sizeof(jdir)) < 0 ||
		    strcmp(jdir, st->dir) == 0 || !journal_waits(jdir, st->key))
			continue;
		if ((st->wait_fd = state_flock(jdir, st->key)) < 0)
			return st->wait_fd == -1 ? R_INUSE : R_SYSTEMP;
		logmsg(LOG_NOTICE, "%s: completing the journal a killed session "
		    "left in %s", acct->mailbox, jdir);
		break;
	}
	if (st->wait_fd < 0)
		snprintf(jdir, sizeof(jdir), "%s", st->dir);
	/* a journal made now: its name must be on disk before an UPDATE
	 * relies on it (the session lock keeps this free of races) */
	fresh = state_path(jdir, st->key, "journal", path, sizeof(path)) &&
	    lstat(path, &sb) < 0 && errno == ENOENT;
	if ((st->journal_fd = state_file(jdir, st->key, "journal")) < 0)
		return R_SYSTEMP;
	if (fresh)
		sync_dir(jdir);
	st->cache_fd = state_file(st->dir, st->key, "cache");
	return R_SENT;
}

/* Leaves the note in the lock file: for the next session, whether a
 * pseudo-message is hidden now (first, so that a short read finds it);
 * for admins, which account and maildrop it belongs to. */
static void
state_note(const struct state *st, const struct account *acct, int pseudo)
{
	char note[PATH_MAX + 128];
	int n = snprintf(note, sizeof(note), "pseudo=%s\nuser=%s uid=%lu "
	    "maildrop=%s\n", pseudo ? "yes" : "no", acct->name,
	    (unsigned long)acct->uid, acct->mailbox);

	/* written over the old note, then cut: never an empty note, which
	 * would read as a file not seen before */
	if (n < 0 || (size_t)n >= sizeof(note) ||
	    pwrite(st->lock_fd, note, (size_t)n, 0) != n ||
	    ftruncate(st->lock_fd, n) < 0)
		logmsg(LOG_WARNING, "%s: cannot write the state note",
		    acct->mailbox);
}

static void
state_close(struct state *st)
{
	int *fds[] = { &st->journal_fd, &st->cache_fd, &st->wait_fd,
	    &st->lock_fd };
	size_t i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

/*
 * Opens the account's maildrop, as a session and --list-uidl do: (root
 * mode) the user's state directory and the privilege drop for good, then
 * as the user the file (checked: a regular file of the user's, one
 * link), its state, the mailbox (completing an interrupted UPDATE), the
 * retirement of a former file's state and the note.  A missing maildrop
 * is an empty one and needs no state.  Returns R_SENT with *mbp set, or
 * the error to answer.
 */
static int
maildrop_open(const struct config *cfg, const struct account *acct,
    struct state *st, struct mailbox **mbp)
{
	struct mailbox_opts o;
	int fd, r;

	if (cfg->root && (!account_servable(acct) ||
	    state_prepare(cfg, acct) < 0 || drop_privileges(acct) < 0))
		return R_SYSTEMP;
	if ((r = mailbox_file(acct->mailbox, geteuid(), &fd)) != MB_OK)
		return r == MB_TEMP ? R_SYSTEMP : R_PERM;
	if (fd >= 0 && (r = state_lock(cfg, acct, fd, st)) != R_SENT) {
		close(fd);
		return r;
	}
	memset(&o, 0, sizeof(o));
	o.owner = geteuid();
	o.mode = cfg->uidl_mode;
	o.uidl_format = cfg->uidl_format;
	o.lock_timeout = cfg->lock_timeout;
	o.max_messages = cfg->max_messages;
	o.max_bytes = cfg->max_bytes;
	o.journal_fd = st->journal_fd;
	o.cache_fd = st->cache_fd;
	o.pseudo_ok = st->pseudo_ok;
	r = mailbox_open_fd(mbp, acct->mailbox, fd, &o);
	if (r != MB_OK)
		return r == MB_LOCKED ? R_LOCKED : r == MB_TEMP ? R_SYSTEMP :
		    R_PERM;
	if (st->lock_fd >= 0) {
		state_retire(st, acct);
		if (st->journal_held)
			mailbox_hold_update(*mbp);
		state_note(st, acct, mailbox_pseudo(*mbp));
	}
	return R_SENT;
}

/*
 * After a successful login: the maildrop opened and scanned, and the
 * +OK.  Any failure ends the session.
 */
static int
session_start(struct session *s)
{
	char ubuf[3 * POP3D_USER_MAX + 1];
	unsigned n;
	int r;

	s->done = 1;
	s->how = "aborted";
	if ((r = maildrop_open(s->cfg, &s->acct, &s->st, &s->mb)) != R_SENT)
		return r;
	mailbox_stat(s->mb, &n, &s->total_bytes);
	logmsg(LOG_INFO, "mailbox loaded: user=%s messages=%u bytes=%llu "
	    "scanned=%llu", log_user(s, ubuf, sizeof(ubuf)), n,
	    (unsigned long long)s->total_bytes,
	    (unsigned long long)mailbox_scanned_octets(s->mb));
	s->done = 0;
	s->how = NULL;
	s->bad = 0;		/* the same count in root and user mode */
	s->state = ST_TRANS;
	session_limit(s, 0);
	reply_ok(s, "Logged in.");
	return R_SENT;
}

/* Logs the outcome of one login attempt. */
static void
log_login(const struct session *s, const char *user, int r)
{
	char ubuf[3 * POP3D_USER_MAX + 1];

	log_escape(ubuf, sizeof(ubuf), user, strlen(user));
	if (r == AUTH_OK)
		logmsg(LOG_INFO, "login: user=%s%s", ubuf,
		    s->acct.virtual ? " (virtual)" : "");
	else
		logmsg(LOG_NOTICE, "login failed: user=%s%s", ubuf,
		    r == AUTH_TEMP ? " (temporary failure)" : "");
}

/*
 * Checks a login and, when it fails, answers no earlier than
 * --fail-delay after the attempt began: the reply time then tells nothing
 * of which path failed (unknown name, wrong password, PAM or password
 * file), as long as the check itself is faster than the delay.
 */
static int
check_login(struct session *s, const char *user, char *pass)
{
	struct timespec until;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &until);
	r = auth_login(s->cfg, user, pass, s->rhost, &s->acct);
	log_login(s, user, r);
	if (r == AUTH_OK)
		return r;
	until.tv_sec += s->cfg->fail_delay_ms / 1000;
	until.tv_nsec += (long)(s->cfg->fail_delay_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until,
	    NULL) == EINTR)
		;
	return r;
}

/* User mode: checks the login here and starts the session. */
static int
login_direct(struct session *s, const char *user, char *pass)
{
	int r = check_login(s, user, pass);

	if (r != AUTH_OK)
		return r == AUTH_TEMP ? R_SYSTEMP : R_AUTH;
	return session_start(s);
}

/* The record the pre-auth child sends per login attempt. */
struct login_rec {
	uint32_t	ulen, plen;
	char		user[POP3D_USER_MAX + 1];
	char		pass[POP3D_PASS_MAX + 1];
};

/*
 * Pre-auth child: sends the attempt to the parent and waits for its
 * verdict.  On success hands over the pipelined input and exits: the
 * parent answers from then on.
 */
static int
login_child(struct session *s, const char *user, char *pass)
{
	struct login_rec rec;
	uint32_t left;
	char v;

	memset(&rec, 0, sizeof(rec));
	rec.ulen = (uint32_t)strnlen(user, POP3D_USER_MAX);
	rec.plen = (uint32_t)strnlen(pass, POP3D_PASS_MAX);
	memcpy(rec.user, user, rec.ulen);
	memcpy(rec.pass, pass, rec.plen);
	if (strlen(user) > POP3D_USER_MAX || strlen(pass) > POP3D_PASS_MAX)
		rec.ulen = 0;	/* never cut: refused like a wrong password */
	explicit_bzero(pass, strlen(pass));
	if (out_flush(&s->out) < 0) {
		explicit_bzero(&rec, sizeof(rec));
		s->done = 1;
		s->how = s->out.timedout ? "timeout" : "disconnect";
		return R_CLOSE;
	}
	/* the parent's check, not the client, takes this time */
	if (write_full(s->priv_fd, &rec, sizeof(rec)) < 0 ||
	    read_full(s->priv_fd, &v, 1, NULL) < 0) {
		explicit_bzero(&rec, sizeof(rec));
		_exit(1);
	}
	explicit_bzero(&rec, sizeof(rec));
	if (v == 'N')
		return R_AUTH;
	if (v != 'Y')
		return R_SYSTEMP;
	left = (uint32_t)in_pending(&s->in);
	if (write_full(s->priv_fd, &left, sizeof(left)) < 0 ||
	    write_full(s->priv_fd, s->in.buf + s->in.start, left) < 0)
		_exit(1);
	_exit(0);
}

static int
login(struct session *s, const char *user, char *pass)
{
	if (s->priv_fd >= 0)
		return login_child(s, user, pass);
	return login_direct(s, user, pass);
}

/*
 * The pre-auth child's seccomp filter: an allow-list of what reading the
 * client, talking to the parent and logging need (plus the memory calls
 * of malloc and the sanitizers); anything else fails with EPERM rather
 * than killing, so a libc that picks another call for the same job gives
 * an error the child survives.  Only where the audit arch is known.
 */
#if defined(__x86_64__)
#define SECCOMP_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH	AUDIT_ARCH_AARCH64
#endif
/* The AddressSanitizer runtime makes calls of its own in the child
 * (sigaltstack, opening its report file) that no allow-list foresees:
 * sanitizer builds go without the filter; the tests know. */
#if defined(__SANITIZE_ADDRESS__)
#undef SECCOMP_ARCH
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef SECCOMP_ARCH
#endif
#endif

#ifdef SECCOMP_ARCH
#define ALLOW(nr) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static void
child_seccomp(void)
{
	static const struct sock_filter insns[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, nr)),
		ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_close),
#ifdef SYS_poll
		ALLOW(SYS_poll),
#endif
		/* sendto: syslog, and send() to a client socket */
		ALLOW(SYS_ppoll), ALLOW(SYS_sendto),
		ALLOW(SYS_exit), ALLOW(SYS_exit_group),
		ALLOW(SYS_rt_sigreturn), ALLOW(SYS_rt_sigprocmask),
		ALLOW(SYS_restart_syscall), ALLOW(SYS_getpid), ALLOW(SYS_gettid),
		ALLOW(SYS_clock_gettime), ALLOW(SYS_clock_nanosleep),
#ifdef SYS_nanosleep
		ALLOW(SYS_nanosleep),
#endif
		ALLOW(SYS_brk), ALLOW(SYS_mmap), ALLOW(SYS_munmap),
		ALLOW(SYS_mremap), ALLOW(SYS_madvise), ALLOW(SYS_futex),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & 0xffff)),
	};
	static const struct sock_fprog prog = {
		.len = sizeof(insns) / sizeof(insns[0]),
		.filter = (struct sock_filter *)(uintptr_t)insns,
	};

	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		fatal("seccomp filter");
}
#undef ALLOW
#endif

/*
 * Root mode, in the child: chroot to the empty directory and become the
 * unprivileged user, with nothing that could bring privileges back: no
 * new privileges, no new processes, no core dumps, and (where supported)
 * a seccomp allow-list.  The empty root directory is not writable, so no
 * new files either; there is no file-size limit, because stdout may be a
 * file (`pop3d < in > out`).
 */
static void
child_confine(const struct passwd *pw)
{
	struct rlimit zero = { 0, 0 };
	struct rlimit nofile = { POP3D_CHILD_NOFILE, POP3D_CHILD_NOFILE };

	if (chroot(POP3D_EMPTY_DIR) < 0 || chdir("/") < 0)
		fatal("chroot %s", POP3D_EMPTY_DIR);
	if (setgroups(0, NULL) < 0 ||
	    setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0)
		fatal("dropping to %s", POP3D_USER);
	if (setuid(0) == 0)
		fatalx("privileges were not dropped");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal("PR_SET_NO_NEW_PRIVS");
	if (setrlimit(RLIMIT_CORE, &zero) < 0 ||
	    setrlimit(RLIMIT_NPROC, &zero) < 0)
		fatal("setrlimit");
	/* valgrind refuses this one; the seccomp filter covers it there */
	if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
		logmsg(LOG_WARNING, "setrlimit RLIMIT_NOFILE: %s",
		    strerror(errno));
#ifdef SECCOMP_ARCH
	child_seccomp();
#endif
}

/*
 * Root mode, in the parent: the limit of a wait for the pre-auth child.
 * The child keeps the session's own limit and ends itself by then; this
 * backstop, POP3D_AUTH_GRACE later (counted from now if the parent's own
 * PAM check used up the budget), only ends a child that is stuck.
 */
static struct io_limit *
child_limit(const struct session *s, struct io_limit *lim)
{
	int64_t now = io_now();

	lim->end = (s->limit.end > now ? s->limit.end : now) +
	    (int64_t)POP3D_AUTH_GRACE * 1000;
	lim->idle = 0;
	return lim;
}

/*
 * Root mode, in the parent: checks each attempt the child sends.  Returns
 * 1 when a login succeeded (s->acct and s->in are set), 0 when the child
 * ended the session, -1 when it did not end in time.
 */
static int
parent_auth(struct session *s, int fd)
{
	struct login_rec rec;
	struct io_limit lim;
	uint32_t left;
	char buf[POP3D_INBUF];
	int fails = 0, r;

	while (fails < POP3D_MAX_FAILS) {
		if (read_full(fd, &rec, sizeof(rec), child_limit(s, &lim)) < 0)
			return errno == ETIMEDOUT ? -1 : 0;
		if (rec.ulen > POP3D_USER_MAX || rec.plen > POP3D_PASS_MAX)
			fatalx("bad record from the pre-auth child");
		rec.user[rec.ulen] = '\0';
		rec.pass[rec.plen] = '\0';
		/* a NUL inside the name shortens it: refuse that outright */
		if (strlen(rec.user) != rec.ulen)
			rec.user[0] = '\0';
		r = check_login(s, rec.user, rec.pass);
		explicit_bzero(&rec, sizeof(rec));
		if (r == AUTH_OK) {
			if (write_full(fd, "Y", 1) < 0)
				return 0;
			if (read_full(fd, &left, sizeof(left),
			    child_limit(s, &lim)) < 0 ||
			    (left <= sizeof(buf) && read_full(fd, buf, left,
			    child_limit(s, &lim)) < 0))
				return errno == ETIMEDOUT ? -1 : 0;
			if (left > sizeof(buf))
				return 0;
			in_preload(&s->in, buf, left);
			return 1;
		}
		fails++;
		if (write_full(fd, r == AUTH_TEMP ? "T" : "N", 1) < 0)
			break;
	}
	return 0;
}

/* Logs the session summary line. */
static void
log_summary(const struct session *s)
{
	char ubuf[3 * POP3D_USER_MAX + 1];
	unsigned n = 0;
	uint64_t octets = 0;

	if (s->mb != NULL)
		mailbox_stat(s->mb, &n, &octets);
	logmsg(LOG_INFO, "session end: user=%s retr=%u/%llu del=%u/%llu "
	    "left=%u/%llu %s", log_user(s, ubuf, sizeof(ubuf)),
	    s->retr_n, (unsigned long long)s->retr_bytes, s->del_n,
	    (unsigned long long)s->del_bytes, n, (unsigned long long)octets,
	    s->how ? s->how : "disconnect");
}

/* How a session can end, for the log; the pre-auth child reports it to
 * the parent as its exit status (an index into this table). */
static const char *const end_names[] = {
	"aborted", "quit", "timeout", "disconnect", "auth failures",
	"bad commands"
};
#define NENDS	(int)(sizeof(end_names) / sizeof(end_names[0]))

static int
end_code(const char *how)
{
	int i;

	for (i = 1; how != NULL && i < NENDS; i++)
		if (strcmp(how, end_names[i]) == 0)
			return i;
	return 0;
}

/* Root mode: forks the pre-auth child and serves the session after it. */
static int
run_root(struct session *s)
{
	const struct passwd *pw = getpwnam(POP3D_USER);
	struct stat st;
	int sv[2], status, ok;
	pid_t pid;

	if (pw == NULL || pw->pw_uid == 0) {
		logmsg(LOG_ERR, "user %s is missing; run make install",
		    POP3D_USER);
		error_reply(s, R_SYSTEMP);
		return 1;
	}
	if (stat(POP3D_EMPTY_DIR, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != 0 || (st.st_mode & 022) != 0) {
		logmsg(LOG_ERR, "directory %s is missing or unsafe; run make "
		    "install", POP3D_EMPTY_DIR);
		error_reply(s, R_SYSTEMP);
		return 1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fatal("socketpair");
	if ((pid = fork()) < 0)
		fatal("fork");
	if (pid == 0) {
		close(sv[0]);
		child_confine(pw);
		s->priv_fd = sv[1];
		out_str(&s->out, "+OK pop3d ready.\r\n");
		session_loop(s);
		_exit(end_code(s->how));
	}
	close(sv[1]);
	ok = parent_auth(s, sv[0]);
	close(sv[0]);
	if (ok < 0) {
		logmsg(LOG_WARNING, "pre-auth child did not end in time; "
		    "killed");
		kill(pid, SIGKILL);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (ok < 0) {
		error_reply(s, R_TIMEOUT);
		s->how = "timeout";
		return 0;
	}
	if (!ok) {
		s->how = WIFEXITED(status) ?
		    end_names[WEXITSTATUS(status) % NENDS] : "aborted";
		return 0;
	}
	error_reply(s, session_start(s));
	session_loop(s);
	return 0;
}

/*
 * Serves one whole session on infd/outfd: root mode with the pre-auth
 * child when cfg->root, else user mode.  rhost is the peer or NULL.
 * Returns the exit status.
 */
int
pop3d_session(const struct config *cfg, int infd, int outfd, const char *rhost)
{
	static struct session sess;	/* one per process; no leak at _exit */
	struct session *s = &sess;
	int status = 0;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->rhost = rhost;
	s->priv_fd = -1;
	s->st.lock_fd = s->st.journal_fd = s->st.cache_fd = s->st.wait_fd = -1;
	s->state = ST_AUTH;
	session_limit(s, io_now());
	in_init(&s->in, infd, &s->limit);
	out_init(&s->out, outfd, &s->limit);
	logmsg(LOG_INFO, "connect from %s", rhost ? rhost : "local");
	if (cfg->root)
		status = run_root(s);
	else {
		out_str(&s->out, "+OK pop3d ready.\r\n");
		session_loop(s);
	}
	if (status == 0)
		log_summary(s);
	out_flush(&s->out);
	if (s->mb != NULL)
		mailbox_close(s->mb);
	state_close(&s->st);
	explicit_bzero(s, sizeof(*s));
	return status;
}

#ifndef POP3D_NO_MAIN

/* --list-uidl USER: prints the unique-id listing of a maildrop. */
static int
list_uidl(const struct config *cfg, const char *user)
{
	char uid[POP3D_UIDL_MAX + 1];
	struct account acct;
	struct mailbox *mb;
	struct passwd *pw = getpwnam(user);
	struct state st;
	unsigned i;
	int r;

	memset(&acct, 0, sizeof(acct));
	memset(&st, 0, sizeof(st));
	st.lock_fd = st.journal_fd = st.cache_fd = st.wait_fd = -1;
	if (pw == NULL || (!cfg->root && pw->pw_uid != getuid())) {
		fprintf(stderr, "pop3d: %s: no such user, or not you\n", user);
		return 1;
	}
	snprintf(acct.name, sizeof(acct.name), "%s", pw->pw_name);
	snprintf(acct.system_name, sizeof(acct.system_name), "%s",
	    pw->pw_name);
	snprintf(acct.home, sizeof(acct.home), "%s", pw->pw_dir);
	acct.uid = pw->pw_uid;
	acct.gid = pw->pw_gid;
	if (auth_mailbox_path(cfg->mailbox, &acct, acct.mailbox,
	    sizeof(acct.mailbox)) < 0) {
		fprintf(stderr, "pop3d: bad mailbox template\n");
		return 1;
	}
	/* as a session would: a pending UPDATE is completed first */
	if ((r = maildrop_open(cfg, &acct, &st, &mb)) != R_SENT) {
		fprintf(stderr, "pop3d: %s: %s\n", acct.mailbox, errtext[r]);
		state_close(&st);
		return 1;
	}
	for (i = 1; i <= mailbox_count(mb); i++) {
		mailbox_uidl(mb, i, uid);
		printf("%u %s\n", i, uid);
	}
	mailbox_close(mb);
	state_close(&st);
	return fflush(stdout) == 0 ? 0 : 1;
}


static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
"usage: pop3d [options]\n"
"  --mailbox TEMPLATE     maildrop path, %%u user, %%h home (default %s)\n"
"  --passwd-file FILE     virtual users: lines user:crypt-hash[:mailbox]\n"
"  --virtual-user USER    system user that virtual users run as (root mode)\n"
"  --pam-service NAME     PAM service name (default %s)\n"
"  --state-dir DIR        session locks, journals, scan caches (default %s as root)\n"
"  --auth-timeout SECONDS time from connect to login, all of it (default %d)\n"
"  --idle-timeout SECONDS autologout after login (default %d; RFC 1939: >= 600)\n"
"  --lock-timeout SECONDS longest wait for the mailbox locks (default %d)\n"
"  --fail-delay MS        delay after a failed login (default %d)\n"
"  --uidl MODE            digest, x-uidl or x-uid (default digest)\n"
"  --uidl-format TEMPLATE x-uid ids as Dovecot's pop3_uidl_format: %%u, %%v\n"
"                         (default %s)\n"
"  --max-messages N       serve at most the first N messages (default %u)\n"
"  --max-bytes N          serve at most N octets, whole messages (default 0:\n"
"                         no limit); the rest waits for a later session\n"
"  --list-uidl USER       print the UIDL listing of USER's maildrop, exit\n"
"  -d, --debug            log to stderr instead of syslog\n"
"  -V, --version          print the version and exit\n"
"  -h, --help             print this help and exit\n",
	    POP3D_MAILBOX, POP3D_PAM_SERVICE, POP3D_STATE_DIR,
	    POP3D_AUTH_TIMEOUT, POP3D_IDLE_TIMEOUT, POP3D_LOCK_TIMEOUT,
	    POP3D_FAIL_DELAY_MS, POP3D_UIDL_FORMAT, MBOX_MAX_MESSAGES);
	exit(status);
}

/* Parses a numeric option value in [lo, hi] or exits with usage. */
static int
option_number(const char *name, const char *arg, unsigned long lo,
    unsigned long hi)
{
	unsigned long v;

	if (parse_number(arg, hi, &v) < 0 || v < lo) {
		fprintf(stderr, "pop3d: --%s: want a number from %lu to %lu\n",
		    name, lo, hi);
		usage(2);
	}
	return (int)v;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mailbox",	  required_argument, NULL, 'm' },
		{ "passwd-file",  required_argument, NULL, 'P' },
		{ "virtual-user", required_argument, NULL, 'U' },
		{ "pam-service",  required_argument, NULL, 's' },
		{ "state-dir",	  required_argument, NULL, 'S' },
		{ "auth-timeout", required_argument, NULL, 'a' },
		{ "idle-timeout", required_argument, NULL, 't' },
		{ "lock-timeout", required_argument, NULL, 'l' },
		{ "fail-delay",	  required_argument, NULL, 'f' },
		{ "uidl",	  required_argument, NULL, 'i' },
		{ "uidl-format",  required_argument, NULL, 'X' },
		{ "max-messages", required_argument, NULL, 'M' },
		{ "max-bytes",	  required_argument, NULL, 'B' },
		{ "list-uidl",	  required_argument, NULL, 'u' },
		{ "debug",	  no_argument,	     NULL, 'd' },
		{ "version",	  no_argument,	     NULL, 'V' },
		{ "help",	  no_argument,	     NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct config cfg = {
		.mailbox = POP3D_MAILBOX,
		.pam_service = POP3D_PAM_SERVICE,
		.auth_timeout = POP3D_AUTH_TIMEOUT,
		.idle_timeout = POP3D_IDLE_TIMEOUT,
		.lock_timeout = POP3D_LOCK_TIMEOUT,
		.fail_delay_ms = POP3D_FAIL_DELAY_MS,
		.uidl_mode = UIDL_DIGEST,
	};
	const char *list_user = NULL, *rhost = NULL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct rlimit rl = { 0, 0 };
	char host[NI_MAXHOST];
	unsigned long bytes;
	int c;

	while ((c = getopt_long(argc, argv, "dVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': cfg.mailbox = optarg; break;
		case 'P': cfg.passwd_file = optarg; break;
		case 'U': cfg.virtual_user = optarg; break;
		case 's': cfg.pam_service = optarg; break;
		case 'S': cfg.state_dir = optarg; break;
		case 'a':
			cfg.auth_timeout = option_number("auth-timeout",
			    optarg, 1, 3600);
			break;
		case 't':
			cfg.idle_timeout = option_number("idle-timeout",
			    optarg, 1, 86400);
			break;
		case 'l':
			cfg.lock_timeout = option_number("lock-timeout",
			    optarg, 1, 3600);
			break;
		case 'f':
			cfg.fail_delay_ms = option_number("fail-delay",
			    optarg, 0, 60000);
			break;
		case 'i':
			if (strcmp(optarg, "digest") == 0)
				cfg.uidl_mode = UIDL_DIGEST;
			else if (strcmp(optarg, "x-uidl") == 0)
				cfg.uidl_mode = UIDL_XUIDL;
			else if (strcmp(optarg, "x-uid") == 0)
				cfg.uidl_mode = UIDL_XUID;
			else {
				fprintf(stderr, "pop3d: --uidl: digest, "
				    "x-uidl or x-uid\n");
				usage(2);
			}
			break;
		case 'X':
			if (mailbox_uidl_format_check(optarg) < 0) {
				fprintf(stderr, "pop3d: --uidl-format: %%u, "
				    "%%v with 0, a width, X, U or L, %%%%, "
				    "printable characters; at most %d in "
				    "all\n", POP3D_UIDL_MAX);
				usage(2);
			}
			cfg.uidl_format = optarg;
			break;
		case 'M':
			cfg.max_messages = (unsigned)option_number(
			    "max-messages", optarg, 1, MBOX_MAX_MESSAGES_OPT);
			break;
		case 'B':
			if (parse_number(optarg, ULONG_MAX, &bytes) < 0) {
				fprintf(stderr, "pop3d: --max-bytes: want a "
				    "number (0: no limit)\n");
				usage(2);
			}
			cfg.max_bytes = bytes;
			break;
		case 'u': list_user = optarg; break;
		case 'd': cfg.debug = 1; break;
		case 'V':
			printf("pop3d %s\n", POP3D_VERSION);
			return 0;
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (optind != argc)
		usage(2);
	if (cfg.uidl_format != NULL && cfg.uidl_mode != UIDL_XUID) {
		fprintf(stderr, "pop3d: --uidl-format needs --uidl x-uid\n");
		usage(2);
	}
	if (geteuid() == 0 && getuid() != 0) {
		fprintf(stderr, "pop3d: must not be installed setuid\n");
		return 2;
	}
	cfg.root = getuid() == 0;
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	(void)setrlimit(RLIMIT_CORE, &rl);
	log_init(cfg.debug);
	if (list_user != NULL)
		return list_uidl(&cfg, list_user);

	if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &sslen) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sslen, host, sizeof(host),
	    NULL, 0, NI_NUMERICHOST) == 0)
		rhost = host;
	return pop3d_session(&cfg, STDIN_FILENO, STDOUT_FILENO, rhost);
}

#endif /* POP3D_NO_MAIN */
