/*
 * tls.c: the TLS process.  It alone reads the private key; it never parses
 * POP3.  Forked when TLS begins (at the connect with --tls-implicit, at
 * STLS otherwise) by the root parent, or in user mode by the session, it
 * loads the certificate chain and key, closes every descriptor it does not
 * need, confines itself (priv.c), says it is ready, then relays between
 * the client's descriptors (ciphertext) and its end of a socketpair
 * (plaintext), through memory BIOs: every read and write is its own, so a
 * client that stops reading never blocks it and the handshake keeps the
 * session's --auth-timeout budget.
 *
 * A TLS session in root mode, while the pre-auth child runs:
 *
 *   pop3d            root        the parent: checks logins, never the key;
 *    |                           holds the plaintext end (B), the report
 *    |                           socket, the record socketpair; fds 0 and
 *    |                           1 are /dev/null once TLS has begun
 *    +- pop3d        pop3d       pre-auth child: chroot, seccomp, rlimits;
 *    |                           reads the client through B (before STLS
 *    |                           the client socket itself)
 *    +- pop3d        pop3d-tls   the TLS process: chroot, seccomp, rlimits,
 *                                not dumpable; holds the client socket,
 *                                the other end of B, its report socket, the
 *                                syslog socket (or stderr with --debug),
 *                                the certificate and the key
 *
 * After login the child has exited and the parent is the mail user (as
 * without TLS), still on B; the TLS process is unchanged.  User mode: the
 * same two processes as the user, with no chroot or user change; the TLS
 * process is still not dumpable and under seccomp and rlimits.
 *
 * The TLS process reports to the starter over a socketpair: one octet
 * 'R' once it is ready, then one struct report ('H' with the version and
 * cipher after the handshake, or 'F').  It exits 0 when the session ended,
 * or the client went away or failed the handshake (logged with the
 * library's reason and the client's address), 1 when the certificate or
 * key could not be loaded.
 *
 * Why OpenSSL 3: it is Debian's default TLS library (libssl3 is on every
 * system), and the one Dovecot, Postfix and stunnel use there.  Its cost
 * per process start was measured (a fresh process each, median of 300,
 * CPU time): initialisation with the system configuration, an RSA-2048
 * chain and key loaded, 8 ms over the same binary doing nothing; GnuTLS
 * 3.7 doing the same, 5.5 ms (3.5 ms plus 2 ms its load-time constructor
 * spends in every process).  2.5 ms per connection, beside the ~17 ms
 * that TLS adds to a session as a whole (handshake, a third process), is
 * not the clear gain that would justify the less common library.
 * OpenSSL is loaded by the TLS process alone, see tlslib.c.
 *
 * Throughput (bench/RESULTS.md, "TLS performance"): the session's output
 * takes one hop more than without TLS (session, socketpair, this process,
 * the client socket) and two copies through the memory BIO; what costs
 * most on the VM it was measured on is the system calls, so pump() moves
 * chunks of up to POP3D_TLS_CHUNK while neither side would block and
 * polls only to wait, and the socketpair holds POP3D_TLS_SOCKBUF.  Left
 * for later: kTLS (SSL_OP_ENABLE_KTLS where the kernel has the tls
 * module; the test machine has none), which would move the encryption of
 * the session's output into the kernel, and with the socket then handed
 * to the session, take this process out of the data path altogether
 * while the private key stays here (TLS 1.3 key updates and alerts would
 * have to come back to it).
 * Calls: tlslib.c (OpenSSL), proxy.c (proxy_read, for implicit TLS from
 * a trusted proxy), priv.c, io.c, log.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io.h"
#include "priv.h"
#include "proxy.h"
#include "tls.h"
#include "tlslib.h"

/* The TLS process's report after the handshake. */
struct report {
	char	kind;			/* 'H' handshake done, 'F' failed */
	char	info[TLS_INFO_MAX];	/* 'H': version and cipher */
};

/* The relay's state (one per TLS process). */
struct relay {
	SSL		*ssl;
	BIO		*rbio, *wbio;	/* from the client, to the client */
	int		 net_in, net_out, net_kind, plain, ctl;
	const char	*rhost;
	int		 net_eof;	/* read() from the client ended */
	int		 tls_eof;	/* the client will send nothing more */
	int		 plain_shut;	/* ... and the session was told */
	int		 plain_eof;	/* the session ended */
	size_t		 doff, dlen;	/* decrypted, for the session */
	size_t		 coff, clen;	/* ciphertext, for the client */
	int64_t		 progress;	/* the client last took ciphertext */
	unsigned char	 dbuf[16384];		/* one TLS record */
	unsigned char	 pbuf[POP3D_TLS_CHUNK];
	unsigned char	 cbuf[POP3D_TLS_CHUNK];
};

void
tls_init(struct tls *t)
{
	memset(t, 0, sizeof(*t));
	t->plain = t->plain_peer = t->ctl = t->ctl_peer = -1;
}

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/*
 * Lets the session queue POP3D_TLS_SOCKBUF octets on its end of the
 * plaintext socketpair: beyond the lesser limit the administrator set
 * for sockets (net.core.wmem_max) when root creates it, since the queue
 * only ever holds what the session has read from its own maildrop.
 */
static void
widen(int fd)
{
	int size = POP3D_TLS_SOCKBUF;

	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size,
	    sizeof(size)) < 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size,
		    sizeof(size));
}

int
tls_prepare(struct tls *t)
{
	int p[2], c[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c) < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	widen(p[0]);
	t->plain = p[0];
	t->plain_peer = p[1];
	t->ctl = c[0];
	t->ctl_peer = c[1];
	return 0;
}

void
tls_forget(struct tls *t)
{
	close_fd(&t->plain_peer);
	close_fd(&t->ctl);
	close_fd(&t->ctl_peer);
}

/* Replaces fd by /dev/null, or closes it where nothing can be opened (the
 * confined pre-auth child). */
static void
release(int fd)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null >= 0 && dup2(null, fd) >= 0) {
		if (null != fd)
			close(null);
		return;
	}
	if (null >= 0)
		close(null);
	close(fd);
}

void
tls_release_raw(int net_in, int net_out)
{
	release(net_in);
	if (net_out != net_in)
		release(net_out);
	if (!log_to_stderr() && net_in != STDERR_FILENO &&
	    net_out != STDERR_FILENO)
		release(STDERR_FILENO);
}

/* ---- the TLS process ---------------------------------------------------- */

/* The library's reason for the last failure, in buf; clears its queue. */
static const char *
ssl_reason(char *buf, size_t size)
{
	unsigned long e = ossl->ERR_get_error();

	if (e == 0)
		snprintf(buf, size, "no reason given");
	else
		ossl->ERR_error_string_n(e, buf, size);
	ossl->ERR_clear_error();
	return buf;
}

/* Closes every descriptor but the n in keep (-1 entries ignored). */
static void
keep_only(int *keep, int n)
{
	unsigned lo = 0;
	int i, j;

	for (i = 1; i < n; i++)		/* a handful: insertion sort */
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int x = keep[j];

			keep[j] = keep[j - 1];
			keep[j - 1] = x;
		}
	for (i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)keep[i] : ~0U;

		if (i < n && keep[i] < 0)
			continue;
		if (hi > lo && close_range(lo, hi - 1, 0) < 0)
			fatal("close_range");
		lo = hi + 1;
	}
}

/*
 * Loads the certificate chain and key into a new context with the
 * defaults: TLS 1.2 at least, no compression, no renegotiation, the
 * server's cipher preference, no session resumption (each connection is a
 * new process: nothing could be resumed).  Returns NULL (logged).
 */
static SSL_CTX *
tls_load(const struct config *cfg)
{
	unsigned char seed;
	char why[256];
	SSL_CTX *ctx;

	if (ossl->OPENSSL_init_ssl(0, NULL) != 1 ||
	    (ctx = ossl->SSL_CTX_new(ossl->TLS_server_method())) == NULL) {
		logmsg(LOG_ERR, "TLS: cannot initialise OpenSSL: %s",
		    ssl_reason(why, sizeof(why)));
		return NULL;
	}
	ossl->SSL_CTX_ctrl(ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION,
	    NULL);
	ossl->SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_TICKET);
	ossl->SSL_CTX_ctrl(ctx, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_OFF,
	    NULL);
	ossl->SSL_CTX_set_num_tickets(ctx, 0);
	ossl->SSL_CTX_ctrl(ctx, SSL_CTRL_SET_DH_AUTO, 1, NULL);
	if (ossl->SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
		logmsg(LOG_ERR, "TLS: certificate %s: %s", cfg->tls_cert,
		    ssl_reason(why, sizeof(why)));
		ossl->SSL_CTX_free(ctx);
		return NULL;
	}
	if (ossl->SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key,
	    SSL_FILETYPE_PEM) != 1 || ossl->SSL_CTX_check_private_key(ctx) != 1) {
		logmsg(LOG_ERR, "TLS: key %s: %s", cfg->tls_key,
		    ssl_reason(why, sizeof(why)));
		ossl->SSL_CTX_free(ctx);
		return NULL;
	}
	/* the random generator is seeded here, before the chroot */
	if (ossl->RAND_bytes(&seed, 1) != 1) {
		logmsg(LOG_ERR, "TLS: no random numbers: %s",
		    ssl_reason(why, sizeof(why)));
		ossl->SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* Sends the report to the starter (who may be gone: nothing to do then). */
static void
report(struct relay *r, char kind)
{
	struct report rep;

	memset(&rep, 0, sizeof(rep));
	rep.kind = kind;
	if (kind == 'H')
		snprintf(rep.info, sizeof(rep.info), "%s/%s",
		    ossl->SSL_get_version(r->ssl), ossl->SSL_CIPHER_get_name(
		    ossl->SSL_get_current_cipher(r->ssl)));
	(void)write_full(r->ctl, &rep, sizeof(rep));
}

/* Logs a failed handshake with the client's address and why. */
static void
handshake_failed(struct relay *r, const char *why)
{
	logmsg(LOG_NOTICE, "TLS handshake failed: client=%s: %s",
	    r->rhost ? r->rhost : "local", why);
	report(r, 'F');
}

/*
 * Advances the handshake with what the client has sent.  Returns 1 when
 * it is complete, 0 while it waits for the client, -1 when it failed
 * (logged).
 */
static int
handshake(struct relay *r)
{
	char why[256];
	int n = ossl->SSL_do_handshake(r->ssl);

	if (n == 1) {
		report(r, 'H');
		return 1;
	}
	if (ossl->SSL_get_error(r->ssl, n) == SSL_ERROR_WANT_READ) {
		if (!r->net_eof)
			return 0;
		handshake_failed(r, "the client closed the connection");
		return -1;
	}
	handshake_failed(r, ssl_reason(why, sizeof(why)));
	return -1;
}

/* Decrypts what the client sent while the session has taken all before.
 * Returns 0, or -1 on a TLS error (logged). */
static int
decrypt(struct relay *r)
{
	char why[256];
	int n;

	if (r->doff < r->dlen || r->tls_eof)
		return 0;
	n = ossl->SSL_read(r->ssl, r->dbuf, sizeof(r->dbuf));
	if (n > 0) {
		r->doff = 0;
		r->dlen = (size_t)n;
		return 0;
	}
	switch (ossl->SSL_get_error(r->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		r->tls_eof = r->net_eof;	/* an end without close_notify */
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		r->tls_eof = 1;
		return 0;
	default:
		logmsg(LOG_NOTICE, "TLS error: client=%s: %s",
		    r->rhost ? r->rhost : "local", ssl_reason(why, sizeof(why)));
		return -1;
	}
}

/* Reads from the client into the library. */
static void
from_client(struct relay *r)
{
	unsigned char buf[16384];
	ssize_t n = read(r->net_in, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0)
		r->net_eof = 1;
	else if (ossl->BIO_write(r->rbio, buf, (int)n) != (int)n)
		fatalx("TLS: BIO_write");
}

/*
 * Sends ciphertext to the client: until the socket would block (or all is
 * sent), but only once to a pipe or terminal, where a write may block and
 * is made only after poll() said it would not.  Returns 0, or -1 when the
 * client is gone.
 */
static int
to_client(struct relay *r)
{
	do {
		ssize_t n;

		if (r->coff == r->clen) {
			int got = ossl->BIO_read(r->wbio, r->cbuf,
			    (int)sizeof(r->cbuf));

			r->coff = 0;
			r->clen = got > 0 ? (size_t)got : 0;
			if (r->clen == 0)
				return 0;
		}
		n = io_write_some(r->net_out, r->net_kind, r->cbuf + r->coff,
		    r->clen - r->coff);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return 0;
		if (n <= 0)
			return -1;
		r->coff += (size_t)n;
		r->progress = io_now();
	} while (r->net_kind != OUT_POLL);
	return 0;
}

/* The session has ended: the close_notify is queued, and the client
 * gets POP3D_TLS_LINGER from now to take the rest. */
static void
session_ended(struct relay *r)
{
	r->plain_eof = 1;
	r->progress = io_now();
	(void)ossl->SSL_shutdown(r->ssl);
}

/*
 * Reads what the session has written, without waiting, and encrypts it;
 * at its end queues the close_notify.  Returns 1 when it read something
 * or the end, 0 when there was nothing, -1 on a TLS error.  The buffer is
 * not wiped: the session's output carries no password (those only come
 * in, through dbuf).
 */
static int
from_session(struct relay *r)
{
	ssize_t n = read(r->plain, r->pbuf, sizeof(r->pbuf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0) {
		session_ended(r);
		return 1;
	}
	return ossl->SSL_write(r->ssl, r->pbuf, (int)n) == (int)n ? 1 : -1;
}

/* Hands decrypted input to the session. */
static void
to_session(struct relay *r)
{
	ssize_t n = send(r->plain, r->dbuf + r->doff, r->dlen - r->doff,
	    MSG_DONTWAIT | MSG_NOSIGNAL);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {			/* the session is gone */
		r->doff = r->dlen;
		session_ended(r);
	} else
		r->doff += (size_t)n;
	if (r->doff == r->dlen)		/* passwords pass through here */
		explicit_bzero(r->dbuf, r->dlen);
}

/* Ciphertext not yet taken by the client. */
static size_t
pending_out(const struct relay *r)
{
	return (r->clen - r->coff) + ossl->BIO_ctrl_pending(r->wbio);
}

/*
 * Moves the session's output to the client while neither would block:
 * sends what is queued (a pipe or terminal only when writable), reads
 * the session again when the client took it all, and so on; poll() is
 * left for the times when one side has to be waited for.  Returns 0, or
 * -1 when the client is gone or on a TLS error.
 */
static int
pump(struct relay *r, int done, int writable)
{
	for (;;) {
		int k;

		if (pending_out(r) > 0 && (writable || r->net_kind !=
		    OUT_POLL) && to_client(r) < 0)
			return -1;
		writable = 0;
		if (!done || r->plain_eof || pending_out(r) >= POP3D_TLS_BUFFER)
			return 0;
		if ((k = from_session(r)) <= 0)
			return k;
	}
}

/*
 * The relay loop.  Before the handshake is done it waits at most until
 * deadline; after the session's end at most POP3D_TLS_LINGER for each
 * progress of the client; in between the session's own limits apply,
 * since it waits on the socketpair.
 */
static void
relay(struct relay *r, int64_t deadline)
{
	int done = 0, writable = 0;

	for (;;) {
		struct pollfd pfd[3];
		int64_t end = 0, now;
		int k;

		if (!done && (done = handshake(r)) < 0)
			return;
		if (done && decrypt(r) < 0)
			return;
		if (r->tls_eof && r->doff == r->dlen && !r->plain_shut) {
			(void)shutdown(r->plain, SHUT_WR);
			r->plain_shut = 1;
		}
		if (pump(r, done, writable) < 0)
			return;
		if (r->plain_eof && pending_out(r) == 0)
			return;
		memset(pfd, 0, sizeof(pfd));
		pfd[0].fd = !r->net_eof && r->doff == r->dlen ? r->net_in : -1;
		pfd[0].events = POLLIN;
		pfd[1].fd = pending_out(r) > 0 ? r->net_out : -1;
		pfd[1].events = POLLOUT;
		/* with no events, still the session's end (POLLHUP): before
		 * the handshake, and while the client is not reading */
		pfd[2].fd = r->plain_eof ? -1 : r->plain;
		if (done && pending_out(r) < POP3D_TLS_BUFFER)
			pfd[2].events |= POLLIN;
		if (r->doff < r->dlen)
			pfd[2].events |= POLLOUT;
		now = io_now();
		if (!done)
			end = deadline;
		else if (r->plain_eof)
			end = r->progress + (int64_t)POP3D_TLS_LINGER * 1000;
		if (end > 0 && now >= end) {
			if (!done)
				handshake_failed(r, "timed out");
			else
				logmsg(LOG_NOTICE, "TLS: client=%s did not take "
				    "the end of the session", r->rhost ?
				    r->rhost : "local");
			return;
		}
		writable = 0;
		k = poll(pfd, 3, end > 0 ? (int)(end - now) : -1);
		if (k < 0 && errno != EINTR)
			fatal("poll");
		if (k <= 0)
			continue;
		/* the session ended before the handshake did: nothing but its
		 * --auth-timeout ends it then */
		if (!done && pfd[2].revents & (POLLHUP | POLLERR)) {
			handshake_failed(r, "timed out");
			return;
		}
		writable = pfd[1].revents != 0;
		if (pfd[0].revents)
			from_client(r);
		if (pfd[2].revents & POLLOUT || (pfd[2].revents & (POLLHUP |
		    POLLERR) && r->doff < r->dlen))
			to_session(r);
		/* the session's end is taken even when the client is not
		 * reading (pump() leaves the session alone then) */
		if (done && pfd[2].revents & (POLLHUP | POLLERR) &&
		    !r->plain_eof && from_session(r) < 0)
			return;
	}
}

/*
 * Implicit TLS from a trusted proxy: the PROXY header precedes the
 * handshake on the raw socket.  It is framed here (proxy_read takes
 * nothing past it, so the ClientHello stays unread) and written unchanged
 * ahead of the decrypted stream; the session parses it as without TLS
 * (conn.c).  Returns 0, or -1 when there was none (the session sees the
 * end of its input and logs the refusal).
 */
static int
pass_proxy(struct relay *r, int64_t deadline)
{
	unsigned char buf[POP3D_PROXY_MAX];
	struct io_limit lim = { 0, 0 };
	int64_t end = io_now() + (int64_t)POP3D_PROXY_TIMEOUT * 1000;
	size_t len;

	lim.end = end < deadline ? end : deadline;
	if (proxy_read(r->net_in, &lim, buf, &len) < 0)
		return -1;
	return write_full(r->plain, buf, len);
}

/* The TLS process: never returns. */
static void __attribute__((noreturn))
tls_process(struct tls *t, const struct config *cfg, int net_in,
    int net_out, int64_t deadline, const char *rhost)
{
	static struct relay r;		/* zero: never used before */
	int keep[] = { net_in, net_out, t->plain_peer, t->ctl_peer,
	    log_to_stderr() ? STDERR_FILENO : -1 };
	SSL_CTX *ctx;

	keep_only(keep, (int)(sizeof(keep) / sizeof(keep[0])));
	log_reopen();
	if (tlslib_load() < 0 || (ctx = tls_load(cfg)) == NULL)
		_exit(1);
	r.net_kind = io_kind(net_out);		/* fstat: before seccomp */
	/* pump() reads the session without waiting; the socket is ours */
	if (fcntl(t->plain_peer, F_SETFL, O_NONBLOCK) < 0)
		fatal("fcntl");
	priv_confine(t->drop, t->uid, t->gid, POP3D_TLS_NOFILE,
	    cfg->tls_user ? cfg->tls_user : POP3D_TLS_USER);
	r.net_in = net_in;
	r.net_out = net_out;
	r.plain = t->plain_peer;
	r.ctl = t->ctl_peer;
	r.rhost = rhost;
	if ((r.ssl = ossl->SSL_new(ctx)) == NULL ||
	    (r.rbio = ossl->BIO_new(ossl->BIO_s_mem())) == NULL ||
	    (r.wbio = ossl->BIO_new(ossl->BIO_s_mem())) == NULL)
		fatalx("TLS: out of memory");
	ossl->SSL_set_bio(r.ssl, r.rbio, r.wbio);
	ossl->SSL_set_accept_state(r.ssl);
	if (write_full(r.ctl, "R", 1) < 0)
		_exit(1);
	if (t->proxy && pass_proxy(&r, deadline) < 0)
		_exit(0);
	relay(&r, deadline);
	/* a last try for what is queued (an alert, the close_notify) */
	if (r.coff < r.clen || ossl->BIO_ctrl_pending(r.wbio) > 0)
		(void)to_client(&r);
	explicit_bzero(r.dbuf, sizeof(r.dbuf));
	ossl->SSL_free(r.ssl);
	ossl->SSL_CTX_free(ctx);
	_exit(0);
}

/* ---- the starter's side ------------------------------------------------- */

int
tls_start(struct tls *t, const struct config *cfg, int net_in, int net_out,
    int64_t deadline, const char *rhost)
{
	struct io_limit lim = { 0, 0 };
	int64_t now = io_now();
	int status;
	char c;

	if (t->failed || (t->plain < 0 && tls_prepare(t) < 0)) {
		t->failed = 1;
		return -1;
	}
	if ((t->pid = fork()) < 0) {
		logmsg(LOG_ERR, "TLS: fork: %s", strerror(errno));
		t->pid = 0;
		t->failed = 1;
		return -1;
	}
	if (t->pid == 0)
		tls_process(t, cfg, net_in, net_out, deadline, rhost);
	close_fd(&t->plain_peer);
	close_fd(&t->ctl_peer);
	/* loading a key is local work: the grace beyond the budget suffices */
	lim.end = (deadline > now ? deadline : now) +
	    (int64_t)POP3D_AUTH_GRACE * 1000;
	if (read_full(t->ctl, &c, 1, &lim) == 0 && c == 'R')
		return 0;
	if (errno == ETIMEDOUT) {
		logmsg(LOG_ERR, "TLS process did not start in time; killed");
		kill(t->pid, SIGKILL);
	}
	while (waitpid(t->pid, &status, 0) < 0 && errno == EINTR)
		;
	t->pid = 0;
	t->failed = 1;
	close_fd(&t->plain);
	close_fd(&t->ctl);
	return -1;
}

void
tls_finish(struct tls *t)
{
	struct report rep;
	int status;

	close_fd(&t->plain);
	close_fd(&t->plain_peer);
	close_fd(&t->ctl_peer);
	if (t->pid > 0) {
		while (waitpid(t->pid, &status, 0) < 0 && errno == EINTR)
			;
		if (WIFSIGNALED(status))
			logmsg(LOG_ERR, "TLS process killed by signal %d",
			    WTERMSIG(status));
		memset(&rep, 0, sizeof(rep));
		if (read_full(t->ctl, &rep, sizeof(rep), NULL) < 0)
			rep.kind = 0;
		rep.info[sizeof(rep.info) - 1] = '\0';
		snprintf(t->info, sizeof(t->info), "%s", rep.kind == 'H' ?
		    rep.info : rep.kind == 'F' ? "failed" : "incomplete");
		t->pid = 0;
	}
	close_fd(&t->ctl);
}
