/*
 * stls.c: libFuzzer target for the STLS hand-over (issue 13), in user
 * mode with TLS configured and a fake TLS process: the input is what the
 * client sends in clear, then (after the first octets "\xff\xfe", if any)
 * what it sends inside TLS, which the fake hands to the session as
 * decrypted.  Each input runs twice: as it is, and with the clear part cut
 * right after the first STLS line, as if the client had sent nothing
 * after STLS.  Both runs must give the same replies in clear and inside
 * TLS (CVE-2011-0411: nothing pipelined after STLS runs), and nothing may
 * follow "+OK Begin TLS negotiation." in clear; otherwise abort().
 * Built with -DFUZZ_REPLAY it replays files instead (make check).
 */
#include <ctype.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fake_login.h"
#include "tls.h"

/* ---- the fake TLS process ------------------------------------------- */

static const unsigned char *inside;	/* what the client sends in TLS */
static size_t inside_len;
static int peer = -1;			/* the fake's end of the socketpair */
static unsigned char replies[1 << 16];	/* what the session sent in TLS */
static size_t replies_len;

void
tls_init(struct tls *t)
{
	memset(t, 0, sizeof(*t));
	t->plain = t->plain_peer = t->ctl = t->ctl_peer = -1;
}

int
tls_prepare(struct tls *t)
{
	(void)t;
	abort();		/* root mode only */
}

/* A socketpair with the input inside TLS, then EOF; at most what the
 * socket takes at once, so that no write blocks. */
int
tls_start(struct tls *t, const struct config *cfg, int net_in, int net_out,
    int64_t deadline, const char *rhost)
{
	int sv[2];
	ssize_t n = 0;

	(void)cfg;
	(void)net_in;
	(void)net_out;
	(void)deadline;
	(void)rhost;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	if (inside_len > 0 &&
	    (n = send(sv[1], inside, inside_len, MSG_DONTWAIT)) < 0)
		abort();
	shutdown(sv[1], SHUT_WR);
	t->plain = sv[0];
	t->pid = 1;		/* tls_finish collects the replies */
	peer = sv[1];
	return 0;
}

void
tls_forget(struct tls *t)
{
	(void)t;
	abort();		/* root mode only */
}

void
tls_release_raw(int net_in, int net_out)
{
	(void)net_in;
	(void)net_out;
}

void
tls_finish(struct tls *t)
{
	ssize_t n;

	if (t->plain >= 0)
		close(t->plain);
	t->plain = -1;
	if (t->pid == 0)
		return;
	while ((n = read(peer, replies + replies_len,
	    sizeof(replies) - replies_len)) > 0)
		replies_len += (size_t)n;
	close(peer);
	peer = -1;
	t->pid = 0;
	snprintf(t->info, sizeof(t->info), "fake");
}

/* ---- the target --------------------------------------------------------- */

struct run {
	unsigned char	*clear;		/* the replies in clear */
	size_t		 clear_len;
	unsigned char	*tls;		/* the replies inside TLS */
	size_t		 tls_len;
};

/* One session on clear (then inside); the replies into *r. */
static void
session(const unsigned char *clear, size_t clear_len, struct run *r)
{
	static struct config cfg = {
		.mailbox = "/nonexistent/%u",
		.pam_service = "pop3d-fuzz",
		.auth_timeout = 3600,	/* never ends a run: same input, same path */
		.idle_timeout = 1,
		.lock_timeout = 1,
		.fail_delay_ms = 0,
		.tls_cert = "/nonexistent/cert.pem",
		.tls_key = "/nonexistent/key.pem",
	};
	int in = memfd_create("in", 0), out = memfd_create("out", 0);
	off_t len;

	fresh_mailbox();
	cfg.state_dir = dir;
	replies_len = 0;
	if (in < 0 || out < 0 || (clear_len &&
	    write(in, clear, clear_len) != (ssize_t)clear_len) ||
	    lseek(in, 0, SEEK_SET) != 0)
		abort();
	pop3d_session(&cfg, in, out, NULL);
	if ((len = lseek(out, 0, SEEK_END)) < 0)
		abort();
	r->clear_len = (size_t)len;
	r->clear = malloc(r->clear_len + 1);
	if (r->clear == NULL || pread(out, r->clear, r->clear_len, 0) !=
	    (ssize_t)r->clear_len)
		abort();
	r->tls_len = replies_len;
	r->tls = malloc(replies_len + 1);
	if (r->tls == NULL)
		abort();
	memcpy(r->tls, replies, replies_len);
	close(in);
	close(out);
}

/* The end of the first line that the session reads as STLS (as
 * in_line and dispatch do: the LF, then one CR, go; "STLS " is STLS), or
 * 0. */
static size_t
after_stls(const unsigned char *p, size_t len)
{
	size_t start = 0, i;

	for (i = 0; i < len; i++) {
		size_t n = i - start;

		if (p[i] != '\n')
			continue;
		if (n > 0 && p[start + n - 1] == '\r')
			n--;
		if (n == 5 && p[start + 4] == ' ')
			n--;
		if (n == 4 && strncasecmp((const char *)p + start, "STLS", 4) == 0)
			return i + 1;
		start = i + 1;
	}
	return 0;
}

int	LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static const char ok[] = "+OK Begin TLS negotiation.\r\n";
	const unsigned char *mark = memmem(data, size, "\xff\xfe", 2);
	size_t clear_len = mark ? (size_t)(mark - data) : size, cut;
	struct run a, b;

	inside = mark ? mark + 2 : NULL;
	inside_len = mark ? size - clear_len - 2 : 0;
	if (inside_len > 4096)		/* what a socketpair takes at once */
		inside_len = 4096;
	session(data, clear_len, &a);
	cut = after_stls(data, clear_len);
	if (a.tls_len > 0 || (a.clear_len >= sizeof(ok) - 1 &&
	    memcmp(a.clear + a.clear_len - (sizeof(ok) - 1), ok,
	    sizeof(ok) - 1) == 0)) {
		/* TLS began: "+OK Begin" was the last reply in clear, and
		 * what followed STLS in clear changed nothing */
		if (memmem(a.clear, a.clear_len, ok, sizeof(ok) - 1) !=
		    a.clear + a.clear_len - (sizeof(ok) - 1) || cut == 0)
			abort();
		session(data, cut, &b);
		if (a.clear_len != b.clear_len || a.tls_len != b.tls_len ||
		    memcmp(a.clear, b.clear, a.clear_len) != 0 ||
		    memcmp(a.tls, b.tls, a.tls_len) != 0)
			abort();
		free(b.clear);
		free(b.tls);
	}
	free(a.clear);
	free(a.tls);
	return 0;
}

#ifdef FUZZ_REPLAY
#include "replay.h"
#endif
