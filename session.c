/*
 * session.c: one POP3 session's protocol: the command table, dispatch,
 * the command handlers, the login check (with its fail delay), the start
 * of TRANSACTION and the session loop.
 * The pre-auth child's login and STLS reach the parent through s->login
 * and s->stls (set by root.c), so calls point down only.
 * Calls: state.c (maildrop_open), auth.c, mailbox.c, tls.c, io.c, log.c.
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

#include "session.h"

/* The session's log identity: the login name escaped, else the name
 * given or last tried, or "-". */
static const char *
log_user(const struct session *s, char *buf, size_t size)
{
	if (s->acct.name[0] != '\0')
		return log_escape(buf, size, s->acct.name,
		    strlen(s->acct.name));
	if (s->have_user)
		return log_escape(buf, size, s->user, strlen(s->user));
	if (s->tried[0] != '\0')
		return log_escape(buf, size, s->tried, strlen(s->tried));
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

/* Maps a mailbox result to a reply (outcome_mailbox); a changed or
 * failing mailbox, or a client gone, ends the session. */
static int
reply_mailbox(struct session *s, int r)
{
	if (r == MB_OK)
		return R_SENT;
	s->done = 1;
	if (r == MB_CLIENT)
		s->how = s->out.timedout ? END_TIMEOUT : END_DISCONNECT;
	else
		s->how = END_ABORTED;
	return outcome_mailbox(r);
}

/*
 * The one rule for how long the client may keep the session waiting, for
 * input or for room to write: before login the whole AUTHORIZATION state
 * within --auth-timeout of the connect (so cheap commands and a client
 * that stops reading use up the same budget); after login each wait,
 * --idle-timeout.
 */
void
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

/*
 * After a successful login: the maildrop opened and scanned, and the
 * +OK.  Any failure ends the session.
 */
int
session_start(struct session *s)
{
	char ubuf[3 * POP3D_USER_MAX + 1];
	unsigned n;
	int r;

	s->done = 1;
	s->how = END_ABORTED;
	if ((r = maildrop_open(s->cfg, &s->acct, &s->st, &s->mb)) != R_SENT)
		return r;
	mailbox_stat(s->mb, &n, &s->total_bytes);
	logmsg(LOG_INFO, "mailbox loaded: user=%s messages=%u bytes=%llu "
	    "scanned=%llu", log_user(s, ubuf, sizeof(ubuf)), n,
	    (unsigned long long)s->total_bytes,
	    (unsigned long long)mailbox_scanned_octets(s->mb));
	s->done = 0;
	s->how = END_NONE;
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
	else	/* the client last, for fail2ban (examples/fail2ban) */
		logmsg(LOG_NOTICE, "login failed: user=%s%s%s%s", ubuf,
		    r == AUTH_TEMP ? " (temporary failure)" : "",
		    s->rhost ? " from " : "", s->rhost ? s->from : "");
}

/*
 * Checks a login and, when it fails, answers no earlier than
 * --fail-delay after the attempt began: the reply time then tells nothing
 * of which path failed (unknown name, wrong password, PAM or password
 * file), as long as the check itself is faster than the delay.
 */
int
session_check_login(struct session *s, const char *user, char *pass)
{
	struct timespec until;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &until);
	r = auth_login(s->cfg, user, pass, s->rhost, &s->acct);
	log_login(s, user, r);
	if (r == AUTH_OK)
		return r;
	snprintf(s->tried, sizeof(s->tried), "%s", user);
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
	int r = session_check_login(s, user, pass);

	if (r != AUTH_OK)
		return r == AUTH_TEMP ? R_SYSTEMP : R_AUTH;
	return session_start(s);
}

/* Checks a login: in the pre-auth child through s->login (root.c), else
 * here.  Returns R_SENT after a login, or the error. */
static int
login(struct session *s, const char *user, char *pass)
{
	if (s->login != NULL)
		return s->login(s, user, pass);
	return login_direct(s, user, pass);
}

/* ---- AUTHORIZATION ---------------------------------------------------- */

/* With TLS configured, are logins refused here?  Before TLS, unless
 * --allow-plaintext-auth: a password must not cross the network in
 * clear. */
static int
plaintext_refused(const struct session *s)
{
	return s->cfg->tls_cert != NULL && !s->tls.active &&
	    !s->cfg->allow_plaintext_auth;
}

/*
 * Moves the session onto the TLS process's plaintext socket: what was
 * buffered from the client is dropped (CVE-2011-0411: nothing pipelined
 * after STLS may run), the client's own descriptors released, and a name
 * given by USER before TLS forgotten.
 */
void
session_use_tls(struct session *s)
{
	int net_in = s->in.fd, net_out = s->out.fd;

	io_switch(&s->in, &s->out, s->tls.plain);
	tls_release_raw(net_in, net_out);
	s->tls.active = 1;
	explicit_bzero(s->user, sizeof(s->user));
	s->have_user = 0;
}

/* Starts the TLS process: in the pre-auth child through s->stls
 * (root.c), else here.  Returns R_SENT when it is ready. */
static int
stls_start(struct session *s)
{
	if (s->stls != NULL)
		return s->stls(s);
	if (tls_start(&s->tls, s->cfg, s->in.fd, s->out.fd, s->limit.end,
	    s->rhost) < 0)
		return R_SYSTEMP;
	return R_SENT;
}

/* STLS (RFC 2595): +OK in clear, then the handshake; AUTHORIZATION goes on
 * inside TLS. */
static int
cmd_stls(struct session *s, char *arg)
{
	int r;

	(void)arg;
	if (s->cfg->tls_cert == NULL || s->cfg->tls_implicit)
		return s->tls.active ? R_TLSACTIVE : R_NOTLS;
	if (s->tls.active)
		return R_TLSACTIVE;
	if ((r = stls_start(s)) != R_SENT)
		return r;
	reply_ok(s, "Begin TLS negotiation.");
	if (out_flush(&s->out) < 0) {
		s->done = 1;
		s->how = s->out.timedout ? END_TIMEOUT : END_DISCONNECT;
		return R_CLOSE;
	}
	session_use_tls(s);
	return R_SENT;
}

static int
cmd_user(struct session *s, char *arg)
{
	if (plaintext_refused(s))
		return R_NEEDTLS;
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

	if (plaintext_refused(s))
		return R_NEEDTLS;
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

	if (plaintext_refused(s))
		return R_NEEDTLS;
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
		s->how = r == IN_TIMEOUT ? END_TIMEOUT : END_DISCONNECT;
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
		return reply_mailbox(s, r);
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
		reply_mailbox(s, r);
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
	s->how = END_QUIT;
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
	s->how = END_ABORTED;
	/* QUIT's own text for an UPDATE that could not be done */
	return outcome_mailbox(r) == R_CHANGED ? R_CHANGED : R_UPDATE;
}

static int
cmd_capa(struct session *s, char *arg)
{
	int logins = !plaintext_refused(s);

	(void)arg;
	reply_ok(s, "Capability list follows");
	out_str(&s->out, "TOP\r\nUIDL\r\n");
	if (logins)
		out_str(&s->out, "USER\r\n");
	out_str(&s->out, "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
	    "EXPIRE NEVER\r\n");
	if (logins)
		out_str(&s->out, "SASL PLAIN\r\n");
	/* RFC 2595: offered on a plain connection only, before login */
	if (s->cfg->tls_cert != NULL && !s->tls.active && s->state == ST_AUTH)
		out_str(&s->out, "STLS\r\n");
	if (s->state == ST_TRANS)
		out_str(&s->out, "IMPLEMENTATION pop3d " POP3D_VERSION "\r\n");
	out_str(&s->out, ".\r\n");
	return R_SENT;
}

/*
 * A PROXY line where no header is expected.  With --proxy-from, only a
 * misconfigured proxy or a spoofing client sends one: from a peer not in
 * the list, or from the client behind a trusted proxy after its header.
 * Refused, logged with that client (never the proxy), and the session
 * ends.  Without --proxy-from, an unknown command like any other.
 */
static int
cmd_proxy(struct session *s, char *arg)
{
	(void)arg;
	if (s->cfg->proxy_n == 0 || s->state != ST_AUTH)
		return R_UNKNOWN;
	logmsg(LOG_NOTICE, "refused PROXY header from %s: %s", s->from,
	    s->proxied ? "a second one, from the client" :
	    "not in --proxy-from");
	s->done = 1;
	s->how = END_PROXY;
	return R_PROXY;
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
	{ "STLS", cmd_stls, ST_AUTH,		A_NONE },
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
	{ "PROXY", cmd_proxy, ST_AUTH | ST_TRANS, 0 },
};

/*
 * Writes the -ERR reply for r and counts it: wrong credentials towards
 * POP3D_MAX_FAILS, other client mistakes towards POP3D_MAX_BAD.
 */
void
session_error(struct session *s, int r)
{
	if (r == R_SENT || r == R_CLOSE)
		return;
	if (outcome_kind(r) == O_AUTH && ++s->fails >= POP3D_MAX_FAILS) {
		s->done = 1;
		s->how = END_AUTH_FAILURES;
	} else if (outcome_kind(r) == O_CLIENT) {
		if (++s->bad >= POP3D_MAX_BAD) {
			r = R_BAD;
			s->done = 1;
			s->how = END_BAD_COMMANDS;
		}
	}
	out_printf(&s->out, "-ERR %s\r\n", outcome_text(r));
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
	session_error(s, r);
}

/* Reads and runs commands until the session ends. */
void
session_loop(struct session *s)
{
	char line[POP3D_LINE_MAX + 1];

	while (!s->done) {
		switch (in_line(&s->in, &s->out, line, POP3D_LINE_MAX)) {
		case IN_LINE:
			dispatch(s, line);
			break;
		case IN_LONG:
			session_error(s, R_TOOLONG);
			break;
		case IN_NUL:
			session_error(s, R_NUL);
			break;
		case IN_TIMEOUT:
			session_error(s, R_TIMEOUT);
			s->done = 1;
			s->how = END_TIMEOUT;
			break;
		default:
			s->done = 1;
			s->how = END_DISCONNECT;
			break;
		}
	}
	explicit_bzero(line, sizeof(line));
	out_flush(&s->out);
}

/* How a session ended, as the summary line says it. */
static const char *const end_names[] = {
	[END_ABORTED] = "aborted", [END_QUIT] = "quit",
	[END_TIMEOUT] = "timeout", [END_DISCONNECT] = "disconnect",
	[END_AUTH_FAILURES] = "auth failures",
	[END_BAD_COMMANDS] = "bad commands",
	[END_PROXY] = "PROXY header refused", [END_NONE] = "disconnect"
};

/* Logs the session summary line; with TLS, after tls_finish(), its
 * version and cipher (or how the handshake ended). */
void
session_log_summary(const struct session *s)
{
	char ubuf[3 * POP3D_USER_MAX + 1];
	unsigned n = 0;
	uint64_t octets = 0;

	if (s->mb != NULL)
		mailbox_stat(s->mb, &n, &octets);
	logmsg(LOG_INFO, "session end: user=%s retr=%u/%llu del=%u/%llu "
	    "left=%u/%llu %s%s%s%s%s", log_user(s, ubuf, sizeof(ubuf)),
	    s->retr_n, (unsigned long long)s->retr_bytes, s->del_n,
	    (unsigned long long)s->del_bytes, n, (unsigned long long)octets,
	    end_names[s->how], s->rhost ? " from " : "",
	    s->rhost ? s->from : "", s->tls.info[0] ? " tls=" : "", s->tls.info);
}
