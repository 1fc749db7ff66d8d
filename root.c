/*
 * root.c: what runs as root: the pre-auth child (forked, confined by
 * priv.c, reading the AUTHORIZATION state and sending each login attempt,
 * or its STLS, as one bounded record over a socketpair), the parent's loop
 * that checks those records (and starts the TLS process, tls.c, for
 * STLS or at the connect with --tls-implicit), and the child's exit status
 * that tells how it ended.  From a trusted proxy the child first reads and
 * parses the PROXY header and sends the parent the parsed header as its
 * first record.
 * Calls: session.c (the loop, the login check, session_start), conn.c, tls.c,
 * priv.c, io.c, log.c.
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

#include "conn.h"
#include "priv.h"
#include "root.h"
#include "session.h"

/* The record the pre-auth child sends per login attempt (REC_LOGIN) or
 * for STLS (REC_STLS, at most once, user and password empty). */
enum { REC_LOGIN = 1, REC_STLS };

struct login_rec {
	uint32_t	kind;		/* REC_ */
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
	rec.kind = REC_LOGIN;
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
		s->how = s->out.timedout ? END_TIMEOUT : END_DISCONNECT;
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

/*
 * Pre-auth child: STLS.  The parent starts the TLS process on the client
 * socket and answers 'Y' when it is ready (the child then answers +OK and
 * moves to the plaintext socket, which it inherited), or 'T'.
 */
static int
stls_child(struct session *s)
{
	struct login_rec rec;
	char v;

	memset(&rec, 0, sizeof(rec));
	rec.kind = REC_STLS;
	if (write_full(s->priv_fd, &rec, sizeof(rec)) < 0 ||
	    read_full(s->priv_fd, &v, 1, NULL) < 0)
		_exit(1);
	return v == 'Y' ? R_SENT : R_SYSTEMP;
}

/*
 * Root mode, in the parent, for the child's STLS record: starts the TLS
 * process on the client socket and moves to its plaintext socket as the
 * child will.  Returns the verdict for the child.
 */
static char
parent_stls(struct session *s)
{
	if (tls_start(&s->tls, s->cfg, s->in.fd, s->out.fd, s->limit.end,
	    s->rhost) < 0)
		return 'T';
	session_use_tls(s);
	return 'Y';
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
		if (rec.kind == REC_STLS && s->cfg->tls_cert != NULL &&
		    !s->cfg->tls_implicit && !s->tls.active &&
		    rec.ulen == 0 && rec.plen == 0) {
			char v = parent_stls(s);

			if (write_full(fd, &v, 1) < 0)
				break;
			continue;
		}
		if (rec.kind != REC_LOGIN || rec.ulen > POP3D_USER_MAX ||
		    rec.plen > POP3D_PASS_MAX)
			fatalx("bad record from the pre-auth child");
		rec.user[rec.ulen] = '\0';
		rec.pass[rec.plen] = '\0';
		/* a NUL inside the name shortens it: refuse that outright */
		if (strlen(rec.user) != rec.ulen)
			rec.user[0] = '\0';
		r = session_check_login(s, rec.user, rec.pass);
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

/* Refuses the session when root mode cannot run safely: the reply in
 * clear, unless the client expects TLS from the first octet. */
static int
refuse(struct session *s)
{
	if (!s->cfg->tls_implicit)
		session_error(s, R_SYSTEMP);
	return 1;
}

/* The unprivileged user named name, or NULL (logged). */
static const struct passwd *
helper_user(const char *name)
{
	const struct passwd *pw = getpwnam(name);

	if (pw == NULL || pw->pw_uid == 0) {
		logmsg(LOG_ERR, "user %s is missing; run make install", name);
		return NULL;
	}
	return pw;
}

/*
 * With TLS configured: the TLS process's user (a user of its own, never
 * the pre-auth child's uid) into s->tls, and its sockets, made before the
 * child so that it inherits the plaintext end.  Returns 0, or -1 (logged).
 */
static int
root_tls_setup(struct session *s, uid_t child_uid)
{
	const char *name = s->cfg->tls_user ? s->cfg->tls_user :
	    POP3D_TLS_USER;
	const struct passwd *pw = helper_user(name);

	if (pw == NULL)
		return -1;
	if (pw->pw_uid == child_uid) {
		logmsg(LOG_ERR, "user %s must not be the pre-auth user %s",
		    name, POP3D_USER);
		return -1;
	}
	s->tls.drop = 1;
	s->tls.uid = pw->pw_uid;
	s->tls.gid = pw->pw_gid;
	if (tls_prepare(&s->tls) < 0)
		fatal("socketpair");
	return 0;
}

/*
 * Pre-auth child, from a trusted proxy, before the greeting: the header
 * read and parsed here, unprivileged; the parent gets the parsed record.
 * Without a valid header the child ends (logged, answered).
 */
static void
child_proxy(struct session *s)
{
	struct proxy_hdr h;

	if (conn_proxy_read(s, &h) < 0)
		_exit(END_PROXY);
	if (write_full(s->priv_fd, &h, sizeof(h)) < 0)
		_exit(1);
	/* the child's own log lines name the client too (a PROXY line from
	 * the client must not get the proxy banned) */
	(void)conn_proxy_accept(s, &h);
}

/*
 * Root mode, in the parent: the pre-auth child's PROXY record, checked
 * before anything of it is used.  Returns 1 (s->rhost is the client), 0
 * when the child ended without one, -1 when it did not end in time.
 */
static int
parent_proxy(struct session *s, int fd)
{
	struct proxy_hdr h;
	struct io_limit lim;

	if (read_full(fd, &h, sizeof(h), child_limit(s, &lim)) < 0)
		return errno == ETIMEDOUT ? -1 : 0;
	if (conn_proxy_accept(s, &h) < 0)
		fatalx("bad PROXY record from the pre-auth child");
	conn_log(s);
	return 1;
}

/* Root mode: forks the pre-auth child and serves the session after it. */
int
root_run(struct session *s)
{
	const struct passwd *pw = helper_user(POP3D_USER);
	struct stat st;
	uid_t uid;
	gid_t gid;
	int sv[2], status, ok;
	pid_t pid;

	if (pw == NULL)
		return refuse(s);
	uid = pw->pw_uid;	/* getpwnam's storage is reused */
	gid = pw->pw_gid;
	if (s->cfg->tls_cert != NULL && root_tls_setup(s, uid) < 0)
		return refuse(s);
	if (stat(POP3D_EMPTY_DIR, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid != 0 || (st.st_mode & 022) != 0) {
		logmsg(LOG_ERR, "directory %s is missing or unsafe; run make "
		    "install", POP3D_EMPTY_DIR);
		return refuse(s);
	}
	if (s->cfg->tls_implicit) {
		s->tls.proxy = s->proxied;	/* header before the handshake */
		if (tls_start(&s->tls, s->cfg, s->in.fd, s->out.fd,
		    s->limit.end, s->rhost) < 0)
			return 1;
		session_use_tls(s);
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		fatal("socketpair");
	if ((pid = fork()) < 0)
		fatal("fork");
	if (pid == 0) {
		close(sv[0]);
		tls_forget(&s->tls);
		priv_confine(1, uid, gid, POP3D_CHILD_NOFILE, POP3D_USER);
		s->priv_fd = sv[1];
		s->login = login_child;
		s->stls = stls_child;
		if (s->proxied)
			child_proxy(s);
		out_str(&s->out, "+OK pop3d ready.\r\n");
		session_loop(s);
		_exit(s->how == END_NONE ? END_ABORTED : s->how);
	}
	close(sv[1]);
	ok = s->proxied ? parent_proxy(s, sv[0]) : 1;
	if (ok > 0)
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
		session_error(s, R_TIMEOUT);
		s->how = END_TIMEOUT;
		return 0;
	}
	if (!ok) {
		s->how = WIFEXITED(status) ?
		    WEXITSTATUS(status) % END_NONE : END_ABORTED;
		return 0;
	}
	session_error(s, session_start(s));
	session_loop(s);
	return 0;
}
