/*
 * tests/unit.c: table-driven unit tests for the line reader (io.c) and
 * the mailbox module: the mbox scanner, sizes, dot-stuffing, TOP, UIDL,
 * change detection, UPDATE, locking and the open checks; the PROXY
 * protocol parser and the --proxy-from lists (proxy.c).
 * Prints "PASS unit/<name>" or "FAIL unit/<name> <why>" per case and
 * exits 1 when any failed.  UNIT_MANY sets the message count of the big
 * mailbox case (default 1000000); UNIT_DEBUG=1 logs to stderr.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <md5.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "mailbox.h"
#include "plan.h"
#include "proxy.h"

/* Options for mailbox_open: no journal, default limits. */
static const struct mailbox_opts *
opts(uid_t owner, enum uidl_mode mode, int lock_timeout)
{
	static struct mailbox_opts o;

	memset(&o, 0, sizeof(o));
	o.owner = owner;
	o.mode = mode;
	o.lock_timeout = lock_timeout;
	o.journal_fd = -1;
	o.cache_fd = -1;
	o.pseudo_ok = 1;
	return &o;
}

static int failed, passed;
static char dir[64];
static char mbpath[128];
static char lockpath[140];

static const char *
mbpath_lock(void)
{
	return lockpath;
}

static void
result(const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
result(const char *name, int ok, const char *fmt, ...)
{
	char why[512] = "";
	va_list ap;

	if (ok) {
		printf("PASS unit/%s\n", name);
		passed++;
	} else {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
		printf("FAIL unit/%s %s\n", name, why);
		failed++;
	}
	fflush(stdout);
}

/* ---- helpers -------------------------------------------------------- */

struct buf {
	unsigned char	*p;
	size_t		 len;
};

static void
buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
}

static void
write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) < 0) {
		perror(path);
		exit(2);
	}
}

static void
append_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) < 0) {
		perror(path);
		exit(2);
	}
}

static struct buf
read_file(const char *path)
{
	struct buf b = { NULL, 0 };
	struct stat st;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		exit(2);
	}
	b.len = (size_t)st.st_size;
	b.p = malloc(b.len + 1);
	if (b.p == NULL || read(fd, b.p, b.len) != (ssize_t)b.len) {
		perror(path);
		exit(2);
	}
	close(fd);
	return b;
}

/* Moves the mtime on, so a change of same size is visible regardless of
 * the filesystem's timestamp granularity. */
static void
bump_mtime(const char *path)
{
	struct stat st;
	struct timespec ts[2];

	if (stat(path, &st) < 0)
		exit(2);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	ts[1].tv_sec += 2;
	if (utimensat(AT_FDCWD, path, ts, 0) < 0)
		exit(2);
}

static int
open_mb(struct mailbox **mb, const void *data, size_t len, enum uidl_mode m)
{
	write_file(mbpath, data, len);
	return mailbox_open(mb, mbpath, opts(getuid(), m, 5));
}

/* What mailbox_send wrote (through a real struct out on a temp file). */
static int
capture(struct mailbox *mb, unsigned n, long lines, struct buf *b)
{
	char path[160];
	struct out *out = malloc(sizeof(*out));
	int fd, r;

	snprintf(path, sizeof(path), "%s/outXXXXXX", dir);
	if (out == NULL || (fd = mkstemp(path)) < 0)
		exit(2);
	unlink(path);
	out_init(out, fd, NULL);
	/* as the session does: check, then send */
	r = mailbox_check(mb, n);
	if (r == MB_OK)
		r = mailbox_send(mb, n, lines, out);
	out_flush(out);
	free(out);
	*b = (struct buf){ NULL, 0 };
	{
		struct stat st;

		if (fstat(fd, &st) < 0)
			exit(2);
		b->len = (size_t)st.st_size;
		b->p = malloc(b->len + 1);
		if (b->p == NULL ||
		    pread(fd, b->p, b->len, 0) != (ssize_t)b->len)
			exit(2);
	}
	close(fd);
	return r;
}

/* Undoes dot-stuffing and drops the terminating ".\r\n".  Returns -1 when
 * the terminator is missing or a line is badly stuffed. */
static int
unstuff(const struct buf *in, struct buf *out)
{
	size_t i = 0, o = 0;

	out->p = malloc(in->len + 1);
	out->len = 0;
	if (in->len < 3 || memcmp(in->p + in->len - 3, ".\r\n", 3) != 0 ||
	    (in->len > 3 && in->p[in->len - 4] != '\n'))
		return -1;
	while (i < in->len - 3) {
		int bol = i == 0 || in->p[i - 1] == '\n';

		if (bol && in->p[i] == '.') {
			if (i + 1 >= in->len - 3 || in->p[i + 1] != '.')
				return -1;
			i++;
		}
		out->p[o++] = in->p[i++];
	}
	out->len = o;
	return 0;
}

static char *
show(const unsigned char *p, size_t len)
{
	static char s[4][200];
	static int k;
	char *d = s[k++ & 3];

	return log_escape(d, 200, (const char *)p, len);
}

/* ---- the line reader ------------------------------------------------ */

struct line_case {
	const char	*name;
	const char	*input;
	size_t		 len;		/* 0: strlen(input) */
	size_t		 repeat_a;	/* prefix of that many 'A' */
	int		 want[4];	/* IN_ codes, ending with IN_EOF */
	const char	*text[4];	/* the lines for IN_LINE */
};

static const struct line_case line_cases[] = {
	{ "line/crlf", "USER bob\r\n", 0, 0,
	    { IN_LINE, IN_EOF }, { "USER bob" } },
	{ "line/lf", "USER bob\n", 0, 0,
	    { IN_LINE, IN_EOF }, { "USER bob" } },
	{ "line/empty", "\r\n\n", 0, 0,
	    { IN_LINE, IN_LINE, IN_EOF }, { "", "" } },
	{ "line/cr-inside", "a\rb\r\n", 0, 0,
	    { IN_LINE, IN_EOF }, { "a\rb" } },
	{ "line/pipelined", "STAT\r\nLIST\nQUIT\r\n", 0, 0,
	    { IN_LINE, IN_LINE, IN_LINE, IN_EOF }, { "STAT", "LIST", "QUIT" } },
	{ "line/exact-255", "\r\n", 0, 253,
	    { IN_LINE, IN_EOF }, { NULL } },
	{ "line/long-256", "\r\nNOOP\r\n", 0, 254,
	    { IN_LONG, IN_LINE, IN_EOF }, { NULL, "NOOP" } },
	{ "line/long-300", "\r\nNOOP\r\n", 0, 300,
	    { IN_LONG, IN_LINE, IN_EOF }, { NULL, "NOOP" } },
	{ "line/long-20000", "\nNOOP\n", 0, 20000,
	    { IN_LONG, IN_LINE, IN_EOF }, { NULL, "NOOP" } },
	{ "line/nul", "US\0ER x\r\nNOOP\r\n", 15, 0,
	    { IN_NUL, IN_LINE, IN_EOF }, { NULL, "NOOP" } },
	{ "line/eof-midline", "NOOP\r\nQUI", 0, 0,
	    { IN_LINE, IN_EOF }, { "NOOP" } },
};

static void
test_line(const struct line_case *c)
{
	static const struct io_limit lim = { 0, 5 };
	char line[POP3D_LINE_MAX + 1];
	struct in *in = malloc(sizeof(*in));
	struct out *out = malloc(sizeof(*out));
	size_t len = c->len ? c->len : strlen(c->input);
	int sv[2], i, r = IN_EOF, devnull;
	pid_t pid;

	if (in == NULL || out == NULL ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		exit(2);
	if ((pid = fork()) == 0) {	/* the client: all at once, then EOF */
		char *a = malloc(c->repeat_a + 1);

		int bad;

		close(sv[0]);
		free(in);
		free(out);
		memset(a, 'A', c->repeat_a);
		bad = write(sv[1], a, c->repeat_a) != (ssize_t)c->repeat_a ||
		    write(sv[1], c->input, len) != (ssize_t)len;
		free(a);
		_exit(bad);
	}
	close(sv[1]);
	devnull = open("/dev/null", O_WRONLY);
	in_init(in, sv[0], &lim);
	out_init(out, devnull, NULL);
	for (i = 0; i < 4; i++) {
		r = in_line(in, out, line, POP3D_LINE_MAX);
		if (r != c->want[i])
			break;
		if (r == IN_LINE && c->text[i] != NULL &&
		    strcmp(line, c->text[i]) != 0)
			break;
		if (r == IN_LINE && c->text[i] == NULL &&
		    strlen(line) != c->repeat_a)
			break;
		if (r == IN_EOF) {
			i = 4;
			break;
		}
	}
	waitpid(pid, NULL, 0);
	close(sv[0]);
	close(devnull);
	result(c->name, i == 4, "step %d: got %d want %d (%s)", i, r,
	    i < 4 ? c->want[i] : -1, r == IN_LINE ? line : "");
	free(in);
	free(out);
}

/* ---- mailbox fixtures ----------------------------------------------- */

#define S(x)	x, sizeof(x) - 1

struct fixture {
	const char	*name;
	const char	*data;
	size_t		 len;
	int		 open;		/* expected mailbox_open result */
	unsigned	 count;
	const char	*sent[4];	/* content as sent, before stuffing */
	size_t		 sent_len[4];	/* 0: strlen */
};

#define FROM1	"From alice@example.org Wed Jan 24 10:49:06 2011\n"
#define FROM2	"From bob@example.org  Thu Feb  3 08:00:00 2011\n"

static const struct fixture fixtures[] = {
	{ "mbox/single", S(FROM1 "Subject: a\n\nbody\n"), MB_OK, 1,
	    { "Subject: a\r\n\r\nbody\r\n" }, { 0 } },
	{ "mbox/three", S(FROM1 "Subject: a\n\none\n\n" FROM2 "Subject: b\n\n"
	    "two\n\n" FROM1 "Subject: c\n\nthree\n"), MB_OK, 3,
	    { "Subject: a\r\n\r\none\r\n", "Subject: b\r\n\r\ntwo\r\n",
	    "Subject: c\r\n\r\nthree\r\n" }, { 0 } },
	{ "mbox/trailing-blank", S(FROM1 "S: a\n\nx\n\n"), MB_OK, 1,
	    { "S: a\r\n\r\nx\r\n" }, { 0 } },
	{ "mbox/two-trailing-blanks", S(FROM1 "S: a\n\nx\n\n\n"), MB_OK, 1,
	    { "S: a\r\n\r\nx\r\n\r\n" }, { 0 } },
	{ "mbox/no-final-newline", S(FROM1 "S: a\n\nlast"), MB_OK, 1,
	    { "S: a\r\n\r\nlast\r\n" }, { 0 } },
	{ "mbox/final-cr", S(FROM1 "S: a\n\nlast\r"), MB_OK, 1,
	    { "S: a\r\n\r\nlast\r\n" }, { 0 } },
	{ "mbox/from-in-body", S(FROM1 "S: a\n\nhello\n\nFrom here we go\n"
	    "\nFrom me Wed Jan 24 2011\n\nFrom x Foo Jan 24 10:49:06 2011\n"),
	    MB_OK, 1, { "S: a\r\n\r\nhello\r\n\r\nFrom here we go\r\n\r\n"
	    "From me Wed Jan 24 2011\r\n\r\n"
	    "From x Foo Jan 24 10:49:06 2011\r\n" }, { 0 } },
	{ "mbox/from-without-blank", S(FROM1 "S: a\n\nx\n" FROM2 "y\n"),
	    MB_OK, 1, { "S: a\r\n\r\nx\r\nFrom bob@example.org  Thu Feb  3 "
	    "08:00:00 2011\r\ny\r\n" }, { 0 } },
	{ "mbox/gt-from", S(FROM1 "S: a\n\n>From me\n>>From you\n"), MB_OK, 1,
	    { "S: a\r\n\r\n>From me\r\n>>From you\r\n" }, { 0 } },
	{ "mbox/dots", S(FROM1 "S: a\n\n.\n..\n.x\n x.\n."), MB_OK, 1,
	    { "S: a\r\n\r\n.\r\n..\r\n.x\r\n x.\r\n.\r\n" }, { 0 } },
	{ "mbox/crlf-stored", S("From a@b Wed Jan 24 10:49:06 2011\r\n"
	    "S: a\r\n\r\none\r\n\r\nFrom c@d Wed Jan 24 10:49:07 2011\r\n"
	    "S: b\r\n\r\ntwo\r\n\r\n"), MB_OK, 2,
	    { "S: a\r\n\r\none\r\n", "S: b\r\n\r\ntwo\r\n" }, { 0 } },
	{ "mbox/mixed-cr", S(FROM1 "a\rb\n\r\r\n\n\rx\n"), MB_OK, 1,
	    { "a\rb\r\n\r\r\n\r\n\rx\r\n" }, { 0 } },
	{ "mbox/nul-bytes", S(FROM1 "S: a\0b\n\n\0\0\n"), MB_OK, 1,
	    { "S: a\0b\r\n\r\n\0\0\r\n" }, { 14 } },
	{ "mbox/header-only", S(FROM1 "S: a\nT: b\n\n" FROM2 "S: c\n"),
	    MB_OK, 2, { "S: a\r\nT: b\r\n", "S: c\r\n" }, { 0 } },
	{ "mbox/empty-message", S(FROM1 "\n" FROM2 "\n"), MB_OK, 2,
	    { "", "" }, { 0 } },
	{ "mbox/from-only-at-eof", S(FROM1), MB_OK, 1, { "" }, { 0 } },
	{ "mbox/date-variants", S(FROM1 "a\n\n"
	    "From u Wed Jan  4 10:49 2011\nb\n\n"
	    "From u Wed Jan 24 10:49:06 PST 2011\nc\n\n"
	    "From u Wed Jan 24 10:49:06 MET DST 2011\nd\n\n"
	    "From u Wed Jan 24 10:49:06 2011 +0100\ne\n\n"
	    "From u Wed Jan 24 10:49:06 -0500 2011\nf\n\n"
	    "From u Wed Jan 24 10:49:06 2011 remote from host\ng\n\n"
	    "From \"a b\"@c sat jan 1 0:00:00 99\r\nh\n\n"
	    "From u Wed Jan 24 10:49:06 2011 trailing junk\ni\n"),
	    MB_OK, 8, { "a\r\n", "b\r\n", "c\r\n" }, { 0 } },
	{ "mbox/pseudo-hidden", S(FROM1 "Date: x\nSubject: DON'T DELETE THIS "
	    "MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1234567890 0000000002\n"
	    "\nThis text is part of the internal format of your mail folder."
	    "\n\n" FROM2 "S: real\n\nbody\n"), MB_OK, 1,
	    { "S: real\r\n\r\nbody\r\n" }, { 0 } },
	/* delivered: a Received: header, so a sender's, not a server's */
	{ "mbox/pseudo-delivered-shown", S(FROM1 "Received: from x by y; "
	    "Wed, 24 Jan 2011 10:49:06 +0000\nSubject: FOLDER INTERNAL DATA\n"
	    "X-IMAP: 1234567890 0000000002\n\nplanted\n\n" FROM2 "S: real\n"
	    "\nbody\n"), MB_OK, 2, { "Received: from x by y; Wed, 24 Jan 2011 "
	    "10:49:06 +0000\r\nSubject: FOLDER INTERNAL DATA\r\nX-IMAP: "
	    "1234567890 0000000002\r\n\r\nplanted\r\n" }, { 0 } },
	{ "mbox/folder-subject-only", S(FROM1 "Subject: FOLDER INTERNAL DATA"
	    "\n\nx\n"), MB_OK, 1,
	    { "Subject: FOLDER INTERNAL DATA\r\n\r\nx\r\n" }, { 0 } },
	{ "mbox/empty-file", "", 0, MB_OK, 0, { NULL }, { 0 } },
	{ "mbox/not-mbox", S("Subject: a\n\nbody\n"), MB_PERM, 0, { NULL },
	    { 0 } },
	{ "mbox/leading-blank", S("\n" FROM1 "S: a\n"), MB_PERM, 0, { NULL },
	    { 0 } },
	{ "mbox/from-every-line", S(FROM1 FROM1 FROM1 "\n" FROM1 "\n" FROM1),
	    MB_OK, 3, { "From alice@example.org Wed Jan 24 10:49:06 2011\r\n"
	    "From alice@example.org Wed Jan 24 10:49:06 2011\r\n", "", "" },
	    { 0 } },
};

/* RETR of every message: the expected content, and LIST size equal to
 * the octets sent once dot-stuffing is undone. */
static void
test_fixture(const struct fixture *f)
{
	struct mailbox *mb = NULL;
	char why[300] = "";
	unsigned i, n;
	uint64_t octets, sum = 0;
	int r = open_mb(&mb, f->data, f->len, UIDL_DIGEST);

	if (r != f->open || (r == MB_OK && mailbox_count(mb) != f->count)) {
		result(f->name, 0, "open %d count %u", r,
		    mb ? mailbox_count(mb) : 0);
		mailbox_close(mb);
		return;
	}
	for (i = 1; mb != NULL && i <= f->count && why[0] == '\0'; i++) {
		struct buf raw = { NULL, 0 }, body = { NULL, 0 };

		if ((r = capture(mb, i, -1, &raw)) != MB_OK)
			snprintf(why, sizeof(why), "msg %u send %d", i, r);
		else if (unstuff(&raw, &body) < 0)
			snprintf(why, sizeof(why), "msg %u bad stuffing: %s",
			    i, show(raw.p, raw.len));
		else if (body.len != mailbox_size(mb, i))
			snprintf(why, sizeof(why), "msg %u LIST %llu RETR %zu",
			    i, (unsigned long long)mailbox_size(mb, i),
			    body.len);
		else if (i <= 4 && f->sent[i - 1] != NULL) {
			size_t el = f->sent_len[i - 1] ? f->sent_len[i - 1] :
			    strlen(f->sent[i - 1]);

			if (el != body.len || memcmp(body.p, f->sent[i - 1],
			    el) != 0)
				snprintf(why, sizeof(why), "msg %u got \"%s\"",
				    i, show(body.p, body.len));
		}
		sum += mailbox_size(mb, i);
		buf_free(&raw);
		buf_free(&body);
	}
	if (mb != NULL && why[0] == '\0') {
		mailbox_stat(mb, &n, &octets);
		if (n != f->count || octets != sum)
			snprintf(why, sizeof(why), "STAT %u %llu", n,
			    (unsigned long long)octets);
	}
	result(f->name, why[0] == '\0', "%s", why);
	mailbox_close(mb);
}

/* A missing file is an empty maildrop, and stays missing. */
static void
test_missing(void)
{
	struct mailbox *mb = NULL;
	struct stat st;
	int r;

	unlink(mbpath);
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 5));
	if (r == MB_OK)
		r = mailbox_update(mb);
	result("mbox/missing", r == MB_OK && mb != NULL &&
	    mailbox_count(mb) == 0 && stat(mbpath, &st) < 0 &&
	    errno == ENOENT, "r %d", r);
	mailbox_close(mb);
}

/* Lines and From_ lines straddling the scanner's block boundaries. */
static void
test_block_boundaries(void)
{
	static const size_t at[] = { 65536 - 30, 65536 - 1, 65536,
	    65536 + 3, 2 * 65536 - 2 };
	char why[200] = "";
	size_t k;

	for (k = 0; k < sizeof(at) / sizeof(at[0]) && why[0] == '\0'; k++) {
		size_t pad = at[k] - strlen(FROM1 "S: a\n\n") - 2, len;
		char *d = malloc(at[k] + 200);
		struct mailbox *mb = NULL;
		struct buf raw, body;
		int r;

		len = (size_t)sprintf(d, FROM1 "S: a\n\n");
		memset(d + len, '.', pad);	/* one long dot line */
		len += pad;
		len += (size_t)sprintf(d + len, "\n\n" FROM2 ".\n\n");
		r = open_mb(&mb, d, len, UIDL_DIGEST);
		if (r != MB_OK || mailbox_count(mb) != 2)
			snprintf(why, sizeof(why), "at %zu: open %d", at[k], r);
		else if (capture(mb, 1, -1, &raw) != MB_OK ||
		    unstuff(&raw, &body) < 0 ||
		    body.len != mailbox_size(mb, 1) ||
		    body.len != 8 + pad + 2 ||
		    raw.len != 8 + pad + 1 + 2 + 3)
			snprintf(why, sizeof(why), "at %zu: msg 1 %zu", at[k],
			    raw.len);
		else {
			buf_free(&raw);
			buf_free(&body);
			if (capture(mb, 2, -1, &raw) != MB_OK ||
			    raw.len != 7 || memcmp(raw.p, "..\r\n.\r\n", 7))
				snprintf(why, sizeof(why), "at %zu: msg 2",
				    at[k]);
		}
		buf_free(&raw);
		buf_free(&body);
		mailbox_close(mb);
		free(d);
	}
	result("mbox/block-boundaries", why[0] == '\0', "%s", why);
}

/*
 * The body fast path works on blocks of 64 octets and must stop exactly
 * at a blank line that comes before a From_ line.  A blank line (LF or
 * CRLF) is put at every offset over the first blocks of a body, followed
 * by a separator, by a line starting with 'F' that is no From_ line, or
 * by plain text, or ending the file; each message's LIST size must equal
 * what RETR sends, unstuffed, and the message count what the line after
 * the blank makes it.
 */
static int
body_run_case(const char *eol, const char *next, size_t k, int want,
    char *why, size_t whylen)
{
	char d[640];
	struct mailbox *mb = NULL;
	struct buf raw = { NULL, 0 }, body = { NULL, 0 };
	unsigned i;
	int len, r;

	len = snprintf(d, sizeof(d), FROM1 "S: a%s%sline one%s%.*s%s"
	    "bbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%s"
	    "bbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%sbbbbbbb%s%s%s",
	    eol, eol, eol, (int)k,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    eol, eol, eol, eol, eol, eol, eol, eol, eol, eol, eol, eol, eol,
	    eol, next);
	if (len < 0 || (size_t)len >= sizeof(d))
		exit(2);
	r = open_mb(&mb, d, (size_t)len, UIDL_DIGEST);
	if (r != MB_OK || mailbox_count(mb) != (unsigned)want) {
		snprintf(why, whylen, "%zu %s: open %d, %u messages", k,
		    show((const unsigned char *)next, strlen(next)), r,
		    r == MB_OK ? mailbox_count(mb) : 0);
		mailbox_close(mb);
		return 0;
	}
	for (i = 1; i <= mailbox_count(mb); i++) {
		int ok = capture(mb, i, -1, &raw) == MB_OK &&
		    unstuff(&raw, &body) == 0 &&
		    body.len == mailbox_size(mb, i);

		if (!ok)
			snprintf(why, whylen, "%zu %s: message %u: LIST %llu, "
			    "RETR %zu", k, show((const unsigned char *)next,
			    strlen(next)), i,
			    (unsigned long long)mailbox_size(mb, i), body.len);
		buf_free(&raw);
		buf_free(&body);
		if (!ok) {
			mailbox_close(mb);
			return 0;
		}
	}
	mailbox_close(mb);
	return 1;
}

static void
test_body_run(void)
{
	static const char *const eols[] = { "\n", "\r\n" };
	static const struct {
		const char	*next;
		int		 want;
	} nexts[] = {
		{ FROM2 "x\n", 2 }, { "Fx\n", 1 }, { "From me\n", 1 },
		{ FROM2 "S: b\n\n0123456789012345678901234567890123456789"
		    "0123456789012345678901234567890123456789\n", 2 },
		{ "x\n\n" FROM2, 2 }, { "\n" FROM2, 2 }, { "", 1 },
		{ "\n", 1 },
	};
	char why[300] = "";
	size_t e, n, k;

	for (e = 0; e < 2; e++)
		for (n = 0; n < sizeof(nexts) / sizeof(nexts[0]); n++)
			for (k = 0; k < 200; k++)
				if (!body_run_case(eols[e], nexts[n].next, k,
				    nexts[n].want, why, sizeof(why)))
					goto out;
out:
	result("mbox/body-run", why[0] == '\0', "%s", why);
}

/* Where the state does not trust a pseudo-message first (the maildrop
 * did not begin with one when pop3d first saw it), it is shown. */
static void
test_pseudo_untrusted(void)
{
	static const char box[] = FROM1 "Date: x\nSubject: DON'T DELETE THIS "
	    "MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1234567890 0000000002\n"
	    "\ninternal\n\n" FROM2 "S: real\n\nbody\n";
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	unsigned n[2] = { 0, 0 };
	int r[2], k;

	write_file(mbpath, box, sizeof(box) - 1);
	for (k = 0; k < 2; k++) {
		o.pseudo_ok = k;
		r[k] = mailbox_open(&mb, mbpath, &o);
		if (r[k] == MB_OK)
			n[k] = mailbox_count(mb);
		mailbox_close(mb);
		mb = NULL;
	}
	result("mbox/pseudo-untrusted-shown", r[0] == MB_OK && r[1] == MB_OK &&
	    n[0] == 2 && n[1] == 1, "untrusted: %d %u, trusted: %d %u",
	    r[0], n[0], r[1], n[1]);
	unlink(mbpath);
}

/*
 * A 3 MB line without any LF; a 200 kB "From " line without a date (text
 * of message 1); a 200 kB From_ line with one (a long envelope sender:
 * it starts message 2, whose fingerprint must match the file).
 */
static void
test_giant_lines(void)
{
	size_t big = 3 * 1024 * 1024, len;
	char *d = malloc(big + 500000);
	struct mailbox *mb = NULL;
	struct buf raw = { NULL, 0 };
	int r;

	len = (size_t)sprintf(d, FROM1 "S: a\n\n");
	memcpy(d + len, "From ", 5);
	memset(d + len + 5, 'x', 200000);
	len += 200005;
	len += (size_t)sprintf(d + len, " is not a date\n\n");
	memcpy(d + len, "From ", 5);
	memset(d + len + 5, 'x', 200000);
	len += 200005;
	len += (size_t)sprintf(d + len, " Wed Jan 24 10:49:06 2011\nS: b\n\n");
	memset(d + len, 'y', big);
	len += big;
	r = open_mb(&mb, d, len, UIDL_DIGEST);
	if (r == MB_OK)
		r = mailbox_check(mb, 2);
	if (r == MB_OK)
		r = capture(mb, 2, -1, &raw);
	result("mbox/giant-lines", r == MB_OK && mailbox_count(mb) == 2 &&
	    mailbox_size(mb, 1) == 6 + 2 + 200005 + 14 + 2 &&
	    mailbox_size(mb, 2) == 6 + 2 + big + 2 &&
	    raw.len == mailbox_size(mb, 2) + 3, "r %d count %u sizes %llu %llu",
	    r, mb ? mailbox_count(mb) : 0,
	    mb ? (unsigned long long)mailbox_size(mb, 1) : 0ULL,
	    mb && mailbox_count(mb) > 1 ?
	    (unsigned long long)mailbox_size(mb, 2) : 0ULL);
	buf_free(&raw);
	mailbox_close(mb);
	free(d);
}

/* Many tiny messages: count, sizes, time, memory. */
static void
test_many(void)
{
	const char *env = getenv("UNIT_MANY");
	unsigned want = env ? (unsigned)strtoul(env, NULL, 10) : 1000000;
	static const char one[] = "From a Mon Jan  1 00:00:00 2000\nX\n\n";
	struct mailbox *mb = NULL;
	struct rusage ru;
	uint64_t octets;
	unsigned i, n;
	FILE *f = fopen(mbpath, "w");
	clock_t t0;
	int r;

	for (i = 0; f != NULL && i < want; i++)
		fwrite(one, 1, sizeof(one) - 1, f);
	if (f == NULL || fclose(f) != 0)
		exit(2);
	t0 = clock();
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 5));
	getrusage(RUSAGE_SELF, &ru);
	if (r == MB_OK)
		mailbox_stat(mb, &n, &octets);
	printf("# %u messages: %.2f s cpu, max rss %ld kB\n", want,
	    (double)(clock() - t0) / CLOCKS_PER_SEC, ru.ru_maxrss);
	result("mbox/many-tiny", r == MB_OK && n == want &&
	    octets == 3ULL * want, "r %d n %u", r, r == MB_OK ? n : 0);
	if (r == MB_OK) {	/* all the same id: -2 ... -want */
		char id[POP3D_UIDL_MAX + 1], first[POP3D_UIDL_MAX + 1];
		char expect[POP3D_UIDL_MAX + 16];

		mailbox_uidl(mb, 1, first);
		mailbox_uidl(mb, want, id);
		snprintf(expect, sizeof(expect), "%s-%u", first, want);
		result("uidl/many-duplicates", want < 2 ||
		    strcmp(id, expect) == 0, "last %s", id);
	}
	mailbox_close(mb);
}

/* ---- TOP -------------------------------------------------------------- */

struct top_case {
	const char	*name;
	const char	*data;
	long		 lines;
	const char	*want;
};

#define TOPMSG	FROM1 "S: a\nT: b\n\n.1\n2\n3\n"

static const struct top_case top_cases[] = {
	{ "top/0", TOPMSG, 0, "S: a\r\nT: b\r\n\r\n.\r\n" },
	{ "top/1", TOPMSG, 1, "S: a\r\nT: b\r\n\r\n..1\r\n.\r\n" },
	{ "top/2", TOPMSG, 2, "S: a\r\nT: b\r\n\r\n..1\r\n2\r\n.\r\n" },
	{ "top/more-than-body", TOPMSG, 99,
	    "S: a\r\nT: b\r\n\r\n..1\r\n2\r\n3\r\n.\r\n" },
	{ "top/header-only", FROM1 "S: a\n", 0, "S: a\r\n.\r\n" },
	{ "top/crlf-stored", "From a@b Wed Jan 24 10:49:06 2011\r\nS: a\r\n"
	    "\r\nx\r\ny\r\n", 1, "S: a\r\n\r\nx\r\n.\r\n" },
	{ "top/no-final-newline", FROM1 "S: a\n\nx", 5,
	    "S: a\r\n\r\nx\r\n.\r\n" },
	{ "top/empty-body", FROM1 "S: a\n\n", 3, "S: a\r\n.\r\n" },
};

static void
test_top(const struct top_case *c)
{
	struct mailbox *mb = NULL;
	struct buf raw = { NULL, 0 };
	int r = open_mb(&mb, c->data, strlen(c->data), UIDL_DIGEST);

	if (r == MB_OK)
		r = capture(mb, 1, c->lines, &raw);
	result(c->name, r == MB_OK && raw.len == strlen(c->want) &&
	    memcmp(raw.p, c->want, raw.len) == 0, "r %d got \"%s\"", r,
	    show(raw.p, raw.len));
	buf_free(&raw);
	mailbox_close(mb);
}

/* ---- the UPDATE plan: pure arithmetic, no I/O ---------------------- */

struct plan_case {
	const char	*name;
	uint64_t	 old;
	uint64_t	 runs[4][2];	/* src, len; len 0 ends the list */
	int		 seal;		/* plan_seal()'s result */
	size_t		 n;		/* runs after merging */
	uint64_t	 final, start;
	uint64_t	 probe[3][2];	/* x, src(x); x = -1 ends the list */
};

static const struct plan_case plan_cases[] = {
	{ "plan/keep-all", 100, { { 0, 100 } }, 0, 1, 100, 100,
	  { { 0, 0 }, { 99, 99 }, { 100, 100 } } },
	{ "plan/delete-first", 100, { { 30, 70 } }, 0, 1, 70, 0,
	  { { 0, 30 }, { 69, 99 }, { 70, 100 } } },
	{ "plan/delete-middle", 100, { { 0, 30 }, { 50, 50 } }, 0, 2, 80, 30,
	  { { 29, 29 }, { 30, 50 }, { 79, 99 } } },
	{ "plan/delete-last", 100, { { 0, 60 } }, 0, 1, 60, 60,
	  { { 59, 59 }, { 60, 100 }, { UINT64_MAX, 0 } } },
	{ "plan/adjacent-merged", 100, { { 0, 30 }, { 30, 20 } }, 0, 1, 50,
	  50, { { 49, 49 }, { 50, 100 }, { UINT64_MAX, 0 } } },
	{ "plan/two-holes", 100, { { 10, 10 }, { 40, 10 }, { 90, 10 } }, 0,
	  3, 30, 0, { { 0, 10 }, { 15, 45 }, { 29, 99 } } },
	{ "plan/out-of-order", 100, { { 50, 10 }, { 20, 10 } }, -1, 2, 0, 0,
	  { { UINT64_MAX, 0 } } },
	{ "plan/past-old", 100, { { 90, 20 } }, -1, 1, 0, 0,
	  { { UINT64_MAX, 0 } } },
};

static void
test_plan(const struct plan_case *c)
{
	struct plan p;
	size_t i;
	int ok = 1;
	char why[128] = "";

	memset(&p, 0, sizeof(p));
	p.old = c->old;
	for (i = 0; i < 4 && c->runs[i][1] != 0; i++)
		plan_add(&p, c->runs[i][0], c->runs[i][1]);
	if (plan_seal(&p) != c->seal || p.n != c->n) {
		ok = 0;
		snprintf(why, sizeof(why), "seal or merge: n=%zu", p.n);
	} else if (c->seal == 0 && (p.final != c->final ||
	    plan_start(&p) != c->start)) {
		ok = 0;
		snprintf(why, sizeof(why), "final %llu start %llu",
		    (unsigned long long)p.final,
		    (unsigned long long)plan_start(&p));
	}
	for (i = 0; ok && c->seal == 0 && i < 3 &&
	    c->probe[i][0] != UINT64_MAX; i++)
		if (plan_src(&p, c->probe[i][0]) != c->probe[i][1]) {
			ok = 0;
			snprintf(why, sizeof(why), "src(%llu) = %llu",
			    (unsigned long long)c->probe[i][0],
			    (unsigned long long)plan_src(&p, c->probe[i][0]));
		}
	result(c->name, ok, "%s", why);
	free(p.run);
	free(p.dst);
}

/* A journal record's plan: keep [0, base), move [ext, old) to base. */
static void
test_plan_gen(void)
{
	static const struct {
		uint64_t base, ext, old;
		int	 r;
	} g[] = {
		{ 10, 40, 100, 0 }, { 0, 40, 100, -1 }, { 50, 40, 100, -1 },
		{ 10, 100, 100, -1 }, { 40, 40, 100, -1 },
	};
	struct plan p;
	size_t i;
	int ok = 1;

	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		memset(&p, 0, sizeof(p));
		if (plan_gen(&p, 2, g[i].base, g[i].ext, g[i].old) != g[i].r ||
		    (g[i].r == 0 && (p.final != 70 || plan_start(&p) != 10 ||
		    plan_src(&p, 10) != 40 || plan_src(&p, 9) != 9 ||
		    p.gen != 2)))
			ok = 0;
		free(p.run);
		free(p.dst);
	}
	result("plan/generation", ok, "a case of plan_gen() differs");
}

/* ---- out_emit across piece boundaries ---------------------------- */

static struct buf
emit_pieces(const unsigned char *src, size_t len, size_t cut1, size_t cut2)
{
	char path[160];
	struct out *out = malloc(sizeof(*out));
	struct emit em;
	struct buf b;
	int fd;

	snprintf(path, sizeof(path), "%s/emitXXXXXX", dir);
	if (out == NULL || (fd = mkstemp(path)) < 0)
		exit(2);
	unlink(path);
	out_init(out, fd, NULL);
	out_emit_init(&em);
	out_emit(out, src, cut1, &em);
	out_emit(out, src + cut1, cut2 - cut1, &em);
	out_emit(out, src + cut2, len - cut2, &em);
	out_emit_end(out, &em);
	out_flush(out);
	free(out);
	b.len = (size_t)lseek(fd, 0, SEEK_END);
	b.p = malloc(b.len + 1);
	if (b.p == NULL || pread(fd, b.p, b.len, 0) != (ssize_t)b.len)
		exit(2);
	close(fd);
	return b;
}

struct emit_case {
	const char	*name;
	const char	*in;
	const char	*want;
};

static const struct emit_case emit_cases[] = {
	{ "emit/dots", ".\n..\nx.\n.x", "..\r\n...\r\nx.\r\n..x\r\n.\r\n" },
	{ "emit/crlf", "a\r\n\r\nb\n\r\r\n", "a\r\n\r\nb\r\n\r\r\n.\r\n" },
	{ "emit/final-cr", "a\r", "a\r\n.\r\n" },
	{ "emit/empty", "", ".\r\n" },
	{ "emit/lone-lf", "\n", "\r\n.\r\n" },
	{ "emit/dot-after-cr", "\r.\n.", "\r.\r\n..\r\n.\r\n" },
};

/* Every way of cutting the input in three gives the same output. */
static void
test_emit(const struct emit_case *c)
{
	const unsigned char *in = (const unsigned char *)c->in;
	size_t len = strlen(c->in), a, b;
	char why[300] = "";

	for (a = 0; a <= len && why[0] == '\0'; a++)
		for (b = a; b <= len && why[0] == '\0'; b++) {
			struct buf o = emit_pieces(in, len, a, b);

			if (o.len != strlen(c->want) ||
			    memcmp(o.p, c->want, o.len) != 0)
				snprintf(why, sizeof(why), "cut %zu,%zu: \"%s\"",
				    a, b, show(o.p, o.len));
			buf_free(&o);
		}
	result(c->name, why[0] == '\0', "%s", why);
}

/* ---- UIDL ------------------------------------------------------------- */

/* popa3d's print order of the MD5 octets. */
static void
popa3d_id(const char *hashed, char *id)
{
	static const int order[8] = { 3, 2, 1, 0, 7, 6, 5, 4 };
	uint8_t d[MD5_DIGEST_LENGTH];
	MD5_CTX ctx;
	int i;

	MD5Init(&ctx);
	MD5Update(&ctx, (const uint8_t *)hashed, strlen(hashed));
	MD5Final(d, &ctx);
	for (i = 0; i < 8; i++)
		sprintf(id + 2 * i, "%02x", d[order[i]]);
}

#define UIDL_M1_HASHED \
	"Delivered-To: u@example.org\n" \
	"Received: from mx.example.org by h.example.org;\n" \
	"\tWed, 24 Jan 2011 10:49:06 +0000\n" \
	"X-Delivery-ID: abc\n"
#define UIDL_M1 FROM1 \
	"Return-Path: <a@example.org>\n" \
	"Delivered-To: u@example.org\n" \
	"Received: from mx.example.org by h.example.org;\n" \
	"\tWed, 24 Jan 2011 10:49:06 +0000\n" \
	"Received: from elsewhere by mx.example.org;\n" \
	"\tWed, 24 Jan 2011 10:49:05 +0000\n" \
	"Date: Wed, 24 Jan 2011 10:49:00 +0000\n" \
	"Message-ID: <1@example.org>\n" \
	"X-Delivery-ID: abc\n" \
	"x-delivery-id: lower\n" \
	"Subject: s\n" \
	"\n" \
	"Delivered-To: body@example.org\n"
#define UIDL_M2_HASHED \
	"date: Thu, 3 Feb 2011 08:00:00 +0000\n" \
	"MESSAGE-ID: <2@example.org>\n" \
	"  <folded>\n" \
	"RECEIVED: from a\n"
#define UIDL_M2 FROM2 \
	"Subject: t\n" \
	"date: Thu, 3 Feb 2011 08:00:00 +0000\n" \
	"MESSAGE-ID: <2@example.org>\n" \
	"  <folded>\n" \
	"RECEIVED: from a\n" \
	"Received: from b\n" \
	"\n" \
	"body\n"

static void
test_uidl_digest(void)
{
	char got1[POP3D_UIDL_MAX + 1], got2[POP3D_UIDL_MAX + 1];
	char want1[17], want2[17];
	struct mailbox *mb = NULL;
	int r = open_mb(&mb, S(UIDL_M1 "\n" UIDL_M2), UIDL_DIGEST);

	popa3d_id(UIDL_M1_HASHED, want1);
	popa3d_id(UIDL_M2_HASHED, want2);
	if (r == MB_OK && mailbox_count(mb) == 2) {
		mailbox_uidl(mb, 1, got1);
		mailbox_uidl(mb, 2, got2);
	} else
		got1[0] = got2[0] = '\0';
	result("uidl/popa3d-digest", strcmp(got1, want1) == 0 &&
	    strcmp(got2, want2) == 0, "r %d got %s %s want %s %s", r, got1,
	    got2, want1, want2);
	mailbox_close(mb);
}

struct uidl_case {
	const char	*name;
	enum uidl_mode	 mode;
	const char	*data;
	const char	*want[5];	/* NULL: the digest (checked unique) */
	const char	*fmt;		/* --uidl-format; NULL: the default */
};

#define XU(v)	FROM1 "X-UIDL: " v "\n\nb\n\n"
#define L70	"0123456789012345678901234567890123456789" \
		"012345678901234567890123456789"

static const struct uidl_case uidl_cases[] = {
	{ "uidl/duplicates", UIDL_DIGEST, FROM1 "S: a\n\n" FROM1 "S: a\n\n"
	    FROM1 "S: b\n", { "=1", "=1-2", "=1-3" }, NULL },
	{ "uidl/xuidl", UIDL_XUIDL, XU("abc") XU(" \tdef  ") XU("abc")
	    XU("abc-2") XU("abc"), { "abc", "def", "abc-3", "abc-2",
	    "abc-4" }, NULL },
	{ "uidl/xuidl-invalid", UIDL_XUIDL, XU("has space") XU("")
	    XU(L70 "x") XU("\x7f"), { NULL, "=1-2", "=1-3", "=1-4" }, NULL },
	{ "uidl/xuidl-70", UIDL_XUIDL, XU(L70) XU(L70),
	    { L70, "012345678901234567890123456789012345678901234567890123"
	    "45678901234567-2" }, NULL },
	{ "uidl/xuidl-off-in-digest-mode", UIDL_DIGEST, XU("abc"),
	    { NULL }, NULL },
	{ "uidl/xuid", UIDL_XUID, FROM1 "X-IMAPbase: 1234567890 4294967295\n"
	    "X-UID: 3\n\nb\n\n" FROM2 "X-UID: 4294967295\n\n" FROM2
	    "X-UID: 4294967296\n\n" FROM2 "X-UID: 7x\n\n",
	    { "00000003499602d2", "ffffffff499602d2", NULL, "=3-2" }, NULL },
	{ "uidl/xuid-pseudo", UIDL_XUID, FROM1 "Subject: FOLDER INTERNAL "
	    "DATA\nX-IMAP: 0000000042 0000000010\n\ninternal\n\n" FROM2
	    "X-UID: 10\n\n", { "0000000a0000002a" }, NULL },
	/* Values UW and Dovecot would renumber: not above the last valid
	 * one (2, then 1), above the folder's last UID (6 > 5). */
	{ "uidl/xuid-order", UIDL_XUID, FROM1 "X-IMAPbase: 7 0000000005\n"
	    "X-UID: 2\n\n" FROM2 "Message-ID: <a>\nX-UID: 2\n\n" FROM2
	    "Message-ID: <b>\nX-UID: 1\n\n" FROM2 "X-UID: 5\n\n" FROM2
	    "Message-ID: <c>\nX-UID: 6\n\n",
	    { "0000000200000007", NULL, NULL, "0000000500000007", NULL }, NULL },
	{ "uidl/xuid-no-last", UIDL_XUID, FROM1 "X-IMAPbase: 7\nX-UID: 9\n\n"
	    FROM2 "X-UID: 4000000000\n\n",
	    { "0000000900000007", "ee6b280000000007" }, NULL },
	/* --uidl-format: Dovecot's pop3_uidl_format syntax. */
	{ "uidl/format-v.u", UIDL_XUID, FROM1 "X-IMAPbase: 1796620950 300\n"
	    "X-UID: 255\n\n", { "1796620950.255" }, "%v.%u" },
	{ "uidl/format-uw", UIDL_XUID, FROM1 "X-IMAPbase: 1796620950 300\n"
	    "X-UID: 255\n\n", { "6b164296000000ff" }, "%08Xv%08Xu" },
	{ "uidl/format-upper", UIDL_XUID, FROM1 "X-IMAPbase: 1796620950 300\n"
	    "X-UID: 255\n\n", { "FF-6B164296.ff" }, "%XUu-%08XUv.%UXu" },
	{ "uidl/format-widths", UIDL_XUID, FROM1 "X-IMAPbase: 1796620950 300\n"
	    "X-UID: 255\n\n", { "179%00000000ff|255|2" }, "%3v%%%010Xu|%0u|%1u" },
	{ "uidl/format-dup", UIDL_XUID, FROM1 "X-IMAPbase: 1 300\nX-UID: 1\n\n"
	    FROM2 "X-UID: 2\n\n", { "x1", "x2" }, "x%u" },
	{ "uidl/xuid-no-uidvalidity", UIDL_XUID, FROM1 "X-UID: 3\n\n",
	    { NULL }, NULL },
};

/* Checks the ids of a case; "=k" means the id of message k. */
static void
test_uidl(const struct uidl_case *c)
{
	char ids[5][POP3D_UIDL_MAX + 1], why[600] = "";
	struct mailbox_opts o = *opts(getuid(), c->mode, 5);
	struct mailbox *mb = NULL;
	unsigned i, j, n = 0;
	int r;

	o.uidl_format = c->fmt;
	write_file(mbpath, c->data, strlen(c->data));
	r = mailbox_open(&mb, mbpath, &o);

	while (n < 5 && (n == 0 || c->want[n] != NULL ||
	    (mb != NULL && n < mailbox_count(mb))))
		n++;
	if (r != MB_OK || mailbox_count(mb) != n) {
		result(c->name, 0, "open %d count %u want %u", r,
		    mb ? mailbox_count(mb) : 0, n);
		mailbox_close(mb);
		return;
	}
	for (i = 0; i < n; i++) {
		size_t len, k;

		mailbox_uidl(mb, i + 1, ids[i]);
		len = strlen(ids[i]);
		for (k = 0; k < len; k++)
			if (ids[i][k] < 0x21 || ids[i][k] > 0x7e)
				break;
		if (len < 1 || len > POP3D_UIDL_MAX || k < len)
			snprintf(why, sizeof(why), "bad id %u: %s", i + 1,
			    ids[i]);
		for (j = 0; j < i; j++)
			if (strcmp(ids[i], ids[j]) == 0)
				snprintf(why, sizeof(why), "%u and %u: %s",
				    j + 1, i + 1, ids[i]);
	}
	for (i = 0; i < n && why[0] == '\0'; i++) {
		const char *w = c->want[i];
		char expect[2 * POP3D_UIDL_MAX + 1];

		if (w == NULL) {	/* the digest: 16 hex digits */
			if (strlen(ids[i]) != 16 ||
			    strspn(ids[i], "0123456789abcdef") != 16)
				snprintf(why, sizeof(why), "%u: %s not a "
				    "digest", i + 1, ids[i]);
			continue;
		}
		if (w[0] == '=') {
			snprintf(expect, sizeof(expect), "%s%s",
			    ids[w[1] - '1'], w + 2);
			w = expect;
		}
		if (strcmp(ids[i], w) != 0)
			snprintf(why, sizeof(why), "%u: %s want %s", i + 1,
			    ids[i], w);
	}
	result(c->name, why[0] == '\0', "%s", why);
	mailbox_close(mb);
}

/* Which --uidl-format templates are taken. */
static void
test_uidl_format_check(void)
{
	static const char *good[] = { "%u", "%08Xu%08Xv", "%v.%u", "%v-%u",
	    "a%%b%u", "%XUu", "%3v%0u", "%070u", "%060u%v" };
	static const char *bad[] = { "", "%v", "abc", "%m", "%f", "%g",
	    "%{uid}", "%u %v", "%u\t", "%8X", "%071u", "%XXu", "%u%",
	    "%-3u", "%2.3u", "caf\xe9%u", "%061u%v" };
	char why[200] = "";
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (mailbox_uidl_format_check(good[i]) != 0)
			snprintf(why, sizeof(why), "refused %s", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (mailbox_uidl_format_check(bad[i]) != -1)
			snprintf(why, sizeof(why), "took %s", bad[i]);
	result("uidl/format-check", why[0] == '\0', "%s", why);
}

/* The same maildrop gives the same ids in the next session, and after a
 * deletion the others keep theirs. */
static void
test_uidl_stable(void)
{
	static const char data[] = UIDL_M1 "\n" UIDL_M2 "\n" FROM1 "S: c\n";
	char a[3][POP3D_UIDL_MAX + 1], b[2][POP3D_UIDL_MAX + 1];
	struct mailbox *mb = NULL;
	int r = open_mb(&mb, S(data), UIDL_DIGEST), ok = 0;

	if (r == MB_OK) {
		mailbox_uidl(mb, 1, a[0]);
		mailbox_uidl(mb, 2, a[1]);
		mailbox_uidl(mb, 3, a[2]);
		mailbox_delete(mb, 2);
		r = mailbox_update(mb);
		mailbox_close(mb);
		mb = NULL;
	}
	if (r == MB_OK)
		r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 5));
	if (r == MB_OK && mailbox_count(mb) == 2) {
		mailbox_uidl(mb, 1, b[0]);
		mailbox_uidl(mb, 2, b[1]);
		ok = strcmp(a[0], b[0]) == 0 && strcmp(a[2], b[1]) == 0;
	}
	result("uidl/stable-after-delete", ok, "r %d", r);
	mailbox_close(mb);
}

/* ---- change detection ------------------------------------------------ */

#define CH_DATA	FROM1 "Subject: one\n\nbody one\n\n" FROM2 "Subject: two\n\n" \
	"body two\n"
#define CH_NEW	"\nFrom carol@example.org Fri Feb  4 09:00:00 2011\nS: new\n\nn\n"

static void
test_change(void)
{
	struct mailbox *mb = NULL;
	struct buf raw = { NULL, 0 };
	struct buf f;
	int r, r2, r3;
	char tmp[160];

	/* appended mail is fine */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	append_file(mbpath, S(CH_NEW));
	r2 = r == MB_OK ? capture(mb, 2, -1, &raw) : -99;
	r3 = r == MB_OK ? mailbox_check(mb, 1) : -99;
	result("change/append-ok", r2 == MB_OK && r3 == MB_OK &&
	    mailbox_count(mb) == 2, "r %d %d %d", r, r2, r3);
	buf_free(&raw);
	mailbox_close(mb);

	/* same size, one octet changed in a header */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	f = read_file(mbpath);
	*(unsigned char *)memmem(f.p, f.len, "two", 3) = 'T';
	write_file(mbpath, f.p, f.len);
	bump_mtime(mbpath);
	r2 = r == MB_OK ? capture(mb, 2, -1, &raw) : -99;
	result("change/rewritten", r2 == MB_CHANGED && raw.len == 0,
	    "r %d sent %zu", r2, raw.len);
	buf_free(&raw);
	buf_free(&f);
	mailbox_close(mb);

	/* a body octet at the end changed, same size */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	f = read_file(mbpath);
	f.p[f.len - 2] = 'X';
	write_file(mbpath, f.p, f.len);
	bump_mtime(mbpath);
	r2 = r == MB_OK ? mailbox_check(mb, 1) : -99;
	result("change/tail-rewritten", r2 == MB_CHANGED, "r %d", r2);
	buf_free(&f);
	mailbox_close(mb);

	/* truncated */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	if (truncate(mbpath, 10) < 0)
		exit(2);
	r2 = r == MB_OK ? mailbox_check(mb, 1) : -99;
	result("change/truncated", r2 == MB_CHANGED, "r %d", r2);
	mailbox_close(mb);

	/* replaced by rename */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	snprintf(tmp, sizeof(tmp), "%s.new", mbpath);
	write_file(tmp, S(CH_DATA));
	rename(tmp, mbpath);
	r2 = r == MB_OK ? mailbox_check(mb, 2) : -99;
	r3 = r == MB_OK ? mailbox_update(mb) : -99;
	result("change/replaced", r2 == MB_CHANGED, "r %d %d", r2, r3);
	mailbox_close(mb);

	/* a rewrite before UPDATE: nothing written */
	r = open_mb(&mb, S(CH_DATA), UIDL_DIGEST);
	f = read_file(mbpath);
	*(unsigned char *)memmem(f.p, f.len, "one", 3) = 'O';
	write_file(mbpath, f.p, f.len);
	bump_mtime(mbpath);
	if (r == MB_OK)
		mailbox_delete(mb, 2);
	r2 = r == MB_OK ? mailbox_update(mb) : -99;
	buf_free(&raw);
	raw = read_file(mbpath);
	result("change/update-refused", r2 == MB_CHANGED && raw.len == f.len &&
	    memcmp(raw.p, f.p, f.len) == 0, "r %d", r2);
	buf_free(&raw);
	buf_free(&f);
	mailbox_close(mb);
}

/* ---- UPDATE ----------------------------------------------------------- */

#define UP_M1	FROM1 "S: 1\n\none\n\n"
#define UP_M2	FROM2 "S: 2\n\ntwo\n\n"
#define UP_M3	FROM1 "S: 3\n\nthree\n"
#define UP_PS	FROM1 "Subject: DON'T DELETE THIS MESSAGE -- FOLDER " \
	"INTERNAL DATA\nX-IMAP: 1 2\n\ninternal\n\n"

struct update_case {
	const char	*name;
	const char	*data;
	unsigned	 del[4];	/* messages to delete, 0-terminated */
	const char	*append;	/* appended after the scan, or NULL */
	const char	*want;
};

static const struct update_case update_cases[] = {
	{ "update/none", UP_M1 UP_M2 UP_M3, { 0 }, NULL, UP_M1 UP_M2 UP_M3 },
	{ "update/first", UP_M1 UP_M2 UP_M3, { 1 }, NULL, UP_M2 UP_M3 },
	{ "update/middle", UP_M1 UP_M2 UP_M3, { 2 }, NULL, UP_M1 UP_M3 },
	{ "update/last", UP_M1 UP_M2 UP_M3, { 3 }, NULL, UP_M1 UP_M2 },
	{ "update/all", UP_M1 UP_M2 UP_M3, { 1, 2, 3 }, NULL, "" },
	{ "update/all-appended", UP_M1 UP_M2, { 1, 2 }, "\n" UP_M3, UP_M3 },
	{ "update/middle-appended", UP_M1 UP_M2 UP_M3, { 2 }, "\n" UP_M1,
	    UP_M1 UP_M3 "\n" UP_M1 },
	{ "update/pseudo-kept", UP_PS UP_M1 UP_M2, { 1, 2 }, NULL, UP_PS },
	{ "update/pseudo-middle", UP_PS UP_M1 UP_M2 UP_M3, { 2 }, NULL,
	    UP_PS UP_M1 UP_M3 },
};

static void
test_update(const struct update_case *c)
{
	struct mailbox *mb = NULL;
	struct stat st0, st1;
	struct buf f = { NULL, 0 };
	unsigned i;
	int r = open_mb(&mb, c->data, strlen(c->data), UIDL_DIGEST);

	if (c->append != NULL)
		append_file(mbpath, c->append, strlen(c->append));
	stat(mbpath, &st0);
	for (i = 0; r == MB_OK && c->del[i] != 0; i++)
		mailbox_delete(mb, c->del[i]);
	if (r == MB_OK)
		r = mailbox_update(mb);
	stat(mbpath, &st1);
	f = read_file(mbpath);
	result(c->name, r == MB_OK && f.len == strlen(c->want) &&
	    memcmp(f.p, c->want, f.len) == 0 && (c->del[0] != 0 ||
	    (st0.st_mtim.tv_nsec == st1.st_mtim.tv_nsec &&
	    st0.st_mtim.tv_sec == st1.st_mtim.tv_sec)) &&
	    access(mbpath_lock(), F_OK) < 0,
	    "r %d got \"%s\"", r, show(f.p, f.len));
	buf_free(&f);
	mailbox_close(mb);
}

/* A large kept message moved down over a deleted one, across blocks. */
static void
test_update_large(void)
{
	size_t big = 300000, len = 0;
	char *d = malloc(big + 1000), *want;
	struct mailbox *mb = NULL;
	struct buf f;
	size_t i;
	int r;

	len += (size_t)sprintf(d, UP_M1 FROM2 "S: big\n\n");
	for (i = 0; i < big; i++)
		d[len + i] = (char)('a' + i % 26);
	d[len + big - 1] = '\n';
	len += big;
	want = d + strlen(UP_M1);
	r = open_mb(&mb, d, len, UIDL_DIGEST);
	if (r == MB_OK) {
		mailbox_delete(mb, 1);
		r = mailbox_update(mb);
	}
	f = read_file(mbpath);
	result("update/large-move", r == MB_OK && f.len == len -
	    strlen(UP_M1) && memcmp(f.p, want, f.len) == 0, "r %d len %zu",
	    r, f.len);
	buf_free(&f);
	mailbox_close(mb);
	free(d);
}

/* DELE and RSET as seen by STAT and the size of an UPDATE-less QUIT. */
static void
test_dele_rset(void)
{
	struct mailbox *mb = NULL;
	uint64_t o1, o2, o3;
	unsigned n1, n2, n3;
	int r = open_mb(&mb, S(UP_M1 UP_M2 UP_M3), UIDL_DIGEST), ok = 0;

	if (r == MB_OK) {
		mailbox_stat(mb, &n1, &o1);
		mailbox_delete(mb, 2);
		mailbox_delete(mb, 2);
		mailbox_stat(mb, &n2, &o2);
		ok = mailbox_is_deleted(mb, 2) && !mailbox_is_deleted(mb, 1);
		mailbox_reset(mb);
		mailbox_stat(mb, &n3, &o3);
		ok = ok && n1 == 3 && n2 == 2 && o2 == o1 - mailbox_size(mb, 2) &&
		    n3 == 3 && o3 == o1 && !mailbox_is_deleted(mb, 2);
	}
	result("mbox/dele-rset", ok, "r %d", r);
	mailbox_close(mb);
}

/* ---- locking ------------------------------------------------------------ */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
test_locks(void)
{
	struct mailbox *mb = NULL;
	double t0, t;
	int r, r2, p[2];
	pid_t pid;
	char c;

	/* a dotlock held by someone else */
	write_file(mbpath, S(UP_M1));
	if (lockfile_create(lockpath, 0, L_PID) != L_SUCCESS)
		exit(2);
	t0 = now_s();
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	t = now_s() - t0;
	mailbox_close(mb);
	mb = NULL;
	lockfile_remove(lockpath);
	r2 = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("lock/dotlock-busy", r == MB_LOCKED && t >= 0.9 && t < 3 &&
	    r2 == MB_OK && access(lockpath, F_OK) < 0, "r %d after %.2f s, "
	    "then %d", r, t, r2);

	/* the fcntl lock held by another process; the dotlock free */
	if (pipe(p) < 0)
		exit(2);
	if ((pid = fork()) == 0) {
		struct flock fl;
		int fd = open(mbpath, O_RDWR);

		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
			_exit(1);
		close(p[0]);
		if (write(p[1], "L", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	if (read(p[0], &c, 1) != 1)
		exit(2);
	mailbox_close(mb);
	mb = NULL;
	t0 = now_s();
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	t = now_s() - t0;
	mailbox_close(mb);
	mb = NULL;
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	close(p[0]);
	r2 = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("lock/fcntl-busy", r == MB_LOCKED && t >= 0.9 && t < 3 &&
	    r2 == MB_OK && access(lockpath, F_OK) < 0,
	    "r %d after %.2f s, then %d", r, t, r2);

	/* UPDATE while the dotlock is busy: SYS/TEMP, nothing written */
	if (r2 == MB_OK) {
		struct buf f;

		mailbox_delete(mb, 1);
		lockfile_create(lockpath, 0, L_PID);
		r = mailbox_update(mb);
		lockfile_remove(lockpath);
		f = read_file(mbpath);
		result("lock/update-busy", r == MB_LOCKED &&
		    f.len == strlen(UP_M1), "r %d", r);
		buf_free(&f);
	}
	mailbox_close(mb);
}

/* ---- open checks ---------------------------------------------------------- */

static void
test_open_checks(void)
{
	struct mailbox *mb = NULL;
	char other[160];
	int r;

	snprintf(other, sizeof(other), "%s/other", dir);
	write_file(other, S(UP_M1));

	unlink(mbpath);
	if (symlink(other, mbpath) < 0)
		exit(2);
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("open/symlink", r == MB_PERM && mb == NULL, "r %d", r);
	unlink(mbpath);

	if (link(other, mbpath) < 0)
		exit(2);
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("open/hard-link", r == MB_PERM, "r %d", r);
	unlink(mbpath);

	write_file(mbpath, S(UP_M1));
	r = mailbox_open(&mb, mbpath, opts(getuid() + 1, UIDL_DIGEST, 1));
	result("open/wrong-owner", r == MB_PERM, "r %d", r);
	unlink(mbpath);

	if (mkdir(mbpath, 0700) < 0)
		exit(2);
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("open/directory", r == MB_PERM, "r %d", r);
	rmdir(mbpath);

	if (mkfifo(mbpath, 0600) < 0)
		exit(2);
	r = mailbox_open(&mb, mbpath, opts(getuid(), UIDL_DIGEST, 1));
	result("open/fifo", r == MB_PERM, "r %d", r);
	unlink(mbpath);
	unlink(other);
}

/* ---- crash-safe UPDATE: journal and recovery -------------------------- */

/*
 * The crashes are real: a child (this program re-executed with
 * --journal-child, tests/faultinject.so preloaded) runs the UPDATE with a
 * journal and is killed by SIGKILL at the Nth write point (write, fsync,
 * ftruncate, fallocate) on the mailbox or the journal; the recovery is
 * then the next mailbox_open with the journal fd.  JOURNAL_SHIM names the
 * shim (default tests/faultinject.so, relative to the top directory).
 */

#define J_NEW1	"\nFrom carol@example.org Fri Feb  4 09:00:00 2011\n" \
	"Subject: new one\n\ndelivered after the crash\n"
#define J_NEW2	"\nFrom dave@example.org Sat Feb  5 10:00:00 2011\n" \
	"Subject: new two\n\ndelivered after the second crash\n"
#define J_TAIL	"\nFrom erin@example.org Sun Feb  6 11:00:00 2011\n" \
	"Subject: during\n\ndelivered during the session\n"
#define J_MAXMSG	16

struct jcase {
	const char	*name;
	unsigned	 n;		/* messages */
	uint32_t	 del;		/* bit i-1: delete message i */
	int		 pseudo;	/* a UW pseudo-message first */
	int		 tail;		/* J_TAIL appended during the session */
};

static const struct jcase jcases[] = {
	{ "oldest", 8, 0x1, 0, 0 },
	{ "half", 8, 0x55, 0, 1 },
	{ "all-but-last", 6, 0x1f, 0, 0 },
	{ "middle-pseudo", 6, 0x4, 1, 0 },
	{ "all", 5, 0x1f, 0, 1 },
};

static char jpath[128], jlog[128];

/* Message i (1-based) with its separator; sizes vary from 60 to ~6 KB. */
static void
jmsg(struct buf *b, unsigned i, int last)
{
	char line[96];
	unsigned k, lines = (i * 37) % 90 + 1;
	int n;

	n = snprintf(line, sizeof(line), "%sSubject: message %u\n\n",
	    i % 2 ? FROM1 : FROM2, i);
	b->p = realloc(b->p, b->len + (size_t)n + 70 * (lines + 1));
	if (b->p == NULL)
		exit(2);
	memcpy(b->p + b->len, line, (size_t)n);
	b->len += (size_t)n;
	for (k = 0; k < lines; k++) {
		n = snprintf(line, sizeof(line), "line %u of message %u %.*s\n",
		    k, i, (int)((i + k) % 40), "........................................");
		memcpy(b->p + b->len, line, (size_t)n);
		b->len += (size_t)n;
	}
	if (!last)
		b->p[b->len++] = '\n';
}

static void
buf_add(struct buf *b, const void *p, size_t len)
{
	b->p = realloc(b->p, b->len + len + 1);
	if (b->p == NULL)
		exit(2);
	memcpy(b->p + b->len, p, len);
	b->len += len;
}

/* The mailbox before (orig) and after the update (want). */
static void
jbuild(const struct jcase *c, struct buf *orig, struct buf *want)
{
	unsigned i;

	*orig = (struct buf){ NULL, 0 };
	*want = (struct buf){ NULL, 0 };
	if (c->pseudo) {
		buf_add(orig, S(UP_PS));
		buf_add(want, S(UP_PS));
	}
	for (i = 1; i <= c->n; i++) {
		struct buf m = { NULL, 0 };

		jmsg(&m, i, i == c->n);
		buf_add(orig, m.p, m.len);
		if (!(c->del & (1U << (i - 1))))
			buf_add(want, m.p, m.len);
		buf_free(&m);
	}
	if (c->tail) {		/* its separator goes when nothing is before */
		buf_add(orig, S(J_TAIL));
		if (want->len == 0)
			buf_add(want, J_TAIL + 1, strlen(J_TAIL) - 1);
		else
			buf_add(want, S(J_TAIL));
	}
}

static int
journal_child(int argc, char **argv)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	uint32_t del;
	unsigned i;
	int r;

	if (argc != 6)
		return 2;
	snprintf(dir, sizeof(dir), "%s", argv[2]);
	snprintf(mbpath, sizeof(mbpath), "%s/mbox", dir);
	snprintf(jpath, sizeof(jpath), "%s/journal", dir);
	del = (uint32_t)strtoul(argv[4], NULL, 0);
	o.journal_fd = open(jpath, O_RDWR | O_CLOEXEC);
	if (o.journal_fd < 0)
		return 2;
	r = mailbox_open(&mb, mbpath, &o);
	if (r != MB_OK)
		return 20 - r;
	if (strcmp(argv[3], "update") == 0) {
		if (atoi(argv[5])) {	/* delivered, not a write point */
			char *paths = strdup(getenv("FAULT_PATHS"));

			unsetenv("FAULT_PATHS");
			append_file(mbpath, S(J_TAIL));
			setenv("FAULT_PATHS", paths, 1);
			free(paths);
		}
		for (i = 0; i < 32; i++)
			if (del & (1U << i))
				mailbox_delete(mb, i + 1);
		r = mailbox_update(mb);
	}
	mailbox_close(mb);
	return r == MB_OK ? 0 : 30 - r;
}

/* Runs the child; fault: "FAULT_KILL_AT" etc. or NULL.  Returns the wait
 * status. */
static int
jrun(const char *op, const struct jcase *c, const char *fault,
    unsigned long at, const char *mode)
{
	const char *shim = getenv("JOURNAL_SHIM");
	char delbuf[32], atbuf[32], paths[300], self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	pid_t pid;
	int st;

	if (n <= 0)
		exit(2);
	self[n] = '\0';
	snprintf(delbuf, sizeof(delbuf), "%u", c->del);
	snprintf(atbuf, sizeof(atbuf), "%lu", at);
	snprintf(paths, sizeof(paths), "%s:%s", mbpath, jpath);
	fflush(stdout);
	if ((pid = fork()) < 0)
		exit(2);
	if (pid == 0) {
		setenv("LD_PRELOAD", shim ? shim : "tests/faultinject.so", 1);
		setenv("FAULT_PATHS", paths, 1);
		setenv("FAULT_LOG", jlog, 1);
		if (fault != NULL)
			setenv(fault, atbuf, 1);
		if (mode != NULL)
			setenv("FAULT_MODE", mode, 1);
		execl(self, "unit", "--journal-child", dir, op, delbuf,
		    c->tail ? "1" : "0", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		exit(2);
	return st;
}

/* Write points in jlog: the count and the first that changes the
 * mailbox. */
static unsigned
jpoints(unsigned *first)
{
	FILE *f = fopen(jlog, "r");
	char line[600], call[32], path[512];
	unsigned n = 0;

	*first = 0;
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%*u %31s %511s", call, path) != 2)
			continue;
		n++;
		if (*first == 0 && strcmp(path, mbpath) == 0 &&
		    strcmp(call, "fsync") != 0 && strcmp(call, "fdatasync") != 0)
			*first = n;
	}
	fclose(f);
	unlink(jlog);
	return n;
}

/* The last journal write before the mailbox is cut, in jlog (consumed):
 * killed right after it, the final record is durable and the mailbox not
 * yet cut.  0 when there is none. */
static unsigned
jlast_record(void)
{
	FILE *f = fopen(jlog, "r");
	char line[600], call[32], path[512];
	unsigned n = 0, last = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL &&
	    sscanf(line, "%*u %31s %511s", call, path) == 2) {
		n++;
		if (strcmp(path, mbpath) == 0 && strcmp(call, "ftruncate") == 0)
			break;
		if (strcmp(path, jpath) == 0 && strstr(call, "write") != NULL)
			last = n;
	}
	fclose(f);
	unlink(jlog);
	return last;
}

static void
jreset(const struct buf *orig)
{
	write_file(mbpath, orig->p, orig->len);
	write_file(jpath, "", 0);
	unlink(jlog);
}

static off_t
jsize(void)
{
	struct stat st;

	return stat(jpath, &st) == 0 ? st.st_size : -1;
}

/* The recovery, in this process: opens with the journal; with upd,
 * then deletes message 1 and stores UPDATE's outcome in *upd. */
static int
jrecover_update(int *upd)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	int r;

	o.journal_fd = open(jpath, O_RDWR | O_CLOEXEC);
	r = mailbox_open(&mb, mbpath, &o);
	if (r == MB_OK && upd != NULL && mailbox_count(mb) > 0) {
		mailbox_delete(mb, 1);
		*upd = mailbox_update(mb);
	}
	mailbox_close(mb);
	close(o.journal_fd);
	return r;
}

static int
jrecover(void)
{
	return jrecover_update(NULL);
}

static int
jequal(const struct buf *a, const void *extra, size_t elen)
{
	struct buf f = read_file(mbpath);
	int ok = f.len == a->len + elen && memcmp(f.p, a->p, a->len) == 0 &&
	    memcmp(f.p + a->len, extra, elen) == 0;

	buf_free(&f);
	return ok;
}

static int
killed(int st)
{
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

/*
 * One case: count the points, then kill at each one, before and after the
 * call, with mail delivered after every crash; then a full disk at each.
 */
static void
test_journal_case(const struct jcase *c)
{
	struct buf orig, want;
	char name[80], why[200] = "";
	unsigned n, first, k, kills = 0, dummy;
	int st, mode;

	jbuild(c, &orig, &want);
	jreset(&orig);
	if (c->tail)			/* the child appends it */
		orig.len -= strlen(J_TAIL);
	write_file(mbpath, orig.p, orig.len);
	st = jrun("update", c, NULL, 0, NULL);
	n = jpoints(&first);
	snprintf(name, sizeof(name), "journal/%s", c->name);
	result(name, WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	    jequal(&want, "", 0) && jsize() == 0 && n > 2 && first > 1,
	    "status %#x, %u points, first mailbox write %u", st, n, first);
	if (c->tail)
		buf_add(&orig, S(J_TAIL));
	for (mode = 0; mode < 2 && why[0] == '\0'; mode++)
		for (k = 1; k <= n && why[0] == '\0'; k++) {
			int r, untouched = mode == 0 ? k <= first : k < first;

			jreset(&orig);
			if (c->tail)
				write_file(mbpath, orig.p,
				    orig.len - strlen(J_TAIL));
			st = jrun("update", c, "FAULT_KILL_AT", k,
			    mode ? "after" : "before");
			jpoints(&dummy);
			if (!killed(st)) {
				snprintf(why, sizeof(why), "point %u %s: status "
				    "%#x", k, mode ? "after" : "before", st);
				break;
			}
			append_file(mbpath, S(J_NEW1));
			r = jrecover();
			if (r != MB_OK || jsize() != 0 ||
			    !(jequal(&want, S(J_NEW1)) ||
			    (untouched && jequal(&orig, S(J_NEW1)))))
				snprintf(why, sizeof(why), "killed %s point %u of "
				    "%u (first mailbox write %u): r %d, journal %lld "
				    "octets, mailbox wrong", mode ? "after" :
				    "before", k, n, first, r, (long long)jsize());
			kills++;
		}
	snprintf(name, sizeof(name), "journal/%s-kill", c->name);
	result(name, why[0] == '\0' && kills == 2 * n, "%s", why);
	if (getenv("UNIT_DEBUG") != NULL)
		fprintf(stderr, "%s: %u write points, %u kills\n", c->name, n,
		    kills);

	/* A full disk (or an I/O error) at each point. */
	why[0] = '\0';
	for (k = 1; k <= n && why[0] == '\0'; k++) {
		int r, ok;

		jreset(&orig);
		if (c->tail)
			write_file(mbpath, orig.p, orig.len - strlen(J_TAIL));
		st = jrun("update", c, k % 2 ? "FAULT_ENOSPC_AT" :
		    "FAULT_EIO_AT", k, NULL);
		jpoints(&dummy);
		if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 &&
		    WEXITSTATUS(st) != 30 - MB_TEMP)) {
			snprintf(why, sizeof(why), "point %u: status %#x", k, st);
			break;
		}
		/* MB_OK only once the update is complete; an unchanged
		 * mailbox has an empty journal. */
		if (WEXITSTATUS(st) == 0)
			ok = jequal(&want, "", 0);
		else
			ok = jequal(&want, "", 0) || (jequal(&orig, "", 0) &&
			    jsize() == 0) || jsize() > 0;
		r = jrecover();
		if (!ok || r != MB_OK || jsize() != 0 ||
		    !(jequal(&want, "", 0) || jequal(&orig, "", 0)))
			snprintf(why, sizeof(why), "error at point %u of %u: "
			    "status %#x, r %d, journal %lld", k, n, st, r,
			    (long long)jsize());
	}
	snprintf(name, sizeof(name), "journal/%s-enospc", c->name);
	result(name, why[0] == '\0', "%s", why);
	buf_free(&orig);
	buf_free(&want);
}

/* A crash during the recovery, at each of its points, with more mail
 * delivered after each crash. */
static void
test_journal_double(void)
{
	const struct jcase *c = &jcases[0];
	struct buf orig, want;
	unsigned n, m, first, k, j, kills = 0;
	char why[200] = "";
	int st;

	jbuild(c, &orig, &want);
	jreset(&orig);
	jrun("update", c, NULL, 0, NULL);
	n = jpoints(&first);
	for (k = first; k <= n && why[0] == '\0'; k++) {
		for (j = 1; why[0] == '\0'; j++) {
			jreset(&orig);
			st = jrun("update", c, "FAULT_KILL_AT", k, "after");
			jpoints(&first);
			append_file(mbpath, S(J_NEW1));
			st = jrun("open", c, "FAULT_KILL_AT", j, "before");
			m = jpoints(&first);
			if (!killed(st)) {
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					snprintf(why, sizeof(why), "recovery "
					    "status %#x", st);
				break;	/* recovery ran to its end */
			}
			append_file(mbpath, S(J_NEW2));
			if (jrecover() != MB_OK || jsize() != 0 ||
			    !jequal(&want, S(J_NEW1 J_NEW2)))
				snprintf(why, sizeof(why), "update killed at %u, "
				    "recovery at %u of %u: wrong", k, j, m);
			kills++;
		}
	}
	result("journal/recovery-kill", why[0] == '\0' && kills > 0, "%s", why);
	if (getenv("UNIT_DEBUG") != NULL)
		fprintf(stderr, "recovery kills: %u\n", kills);
	buf_free(&orig);
	buf_free(&want);
}

/* Journals that must not be carried out: torn (emptied: the mailbox was
 * never written), another inode, a file rewritten by another program
 * after the crash (both kept as they are, and no UPDATE until an
 * administrator looks: the journal may hold the only copy of mail). */
static void
test_journal_discard(void)
{
	const struct jcase *c = &jcases[1];
	struct buf orig, want, f;
	unsigned n, first;
	char junk[300];
	off_t js;
	int r, u = MB_OK;

	jbuild(c, &orig, &want);
	jreset(&orig);
	memset(junk, 'x', sizeof(junk));
	write_file(jpath, junk, sizeof(junk));
	r = jrecover();
	result("journal/torn-header", r == MB_OK && jsize() == 0 &&
	    jequal(&orig, "", 0), "r %d journal %lld", r, (long long)jsize());

	/* kill after the first mailbox write, then replace the file */
	jreset(&orig);
	jrun("update", c, NULL, 0, NULL);
	n = jpoints(&first);
	jreset(&orig);
	jrun("update", c, "FAULT_KILL_AT", first, "after");
	jpoints(&first);
	f = read_file(mbpath);
	{
		char other[160];

		snprintf(other, sizeof(other), "%s.new", mbpath);
		write_file(other, f.p, f.len);	/* a new inode */
		if (rename(other, mbpath) < 0)
			exit(2);
	}
	js = jsize();
	r = jrecover_update(&u);
	result("journal/other-inode", r == MB_OK && u == MB_TEMP &&
	    js > 0 && jsize() == js && jequal(&f, "", 0) && n > 0,
	    "r %d update %d journal %lld (was %lld)", r, u,
	    (long long)jsize(), (long long)js);
	buf_free(&f);

	/* kill after the first mailbox write, then another program cuts */
	jreset(&orig);
	jrun("update", c, "FAULT_KILL_AT", first, "after");
	jpoints(&first);
	if (truncate(mbpath, 100) < 0)
		exit(2);
	f = read_file(mbpath);
	js = jsize();
	u = MB_OK;
	r = jrecover_update(&u);
	result("journal/rewritten", r == MB_OK && u == MB_TEMP && js > 0 &&
	    jsize() == js && jequal(&f, "", 0), "r %d update %d journal %lld "
	    "(was %lld)", r, u, (long long)jsize(), (long long)js);
	buf_free(&f);

	/* killed right after the final record, before its data reached the
	 * mailbox; then another program changes the old end (the file
	 * looks cut, and is not): the record's data must not be written */
	c = &jcases[0];
	buf_free(&orig);
	buf_free(&want);
	jbuild(c, &orig, &want);
	jreset(&orig);
	jrun("update", c, NULL, 0, NULL);
	n = jlast_record();
	jreset(&orig);
	jrun("update", c, "FAULT_KILL_AT", n, "after");
	jpoints(&first);
	f = read_file(mbpath);
	f.p[f.len - 2] ^= 0x20;
	write_file(mbpath, f.p, f.len);
	js = jsize();
	u = MB_OK;
	r = jrecover_update(&u);
	result("journal/looks-cut-but-rewritten", n > 0 && r == MB_OK &&
	    u == MB_TEMP && js > 0 && jsize() == js && jequal(&f, "", 0),
	    "point %u: r %d update %d journal %lld (was %lld)", n, r, u,
	    (long long)jsize(), (long long)js);
	buf_free(&f);
	buf_free(&orig);
	buf_free(&want);
}

static void
test_journal(void)
{
	size_t i;

	snprintf(jpath, sizeof(jpath), "%s/journal", dir);
	snprintf(jlog, sizeof(jlog), "%s/faults", dir);
	for (i = 0; i < sizeof(jcases) / sizeof(jcases[0]); i++)
		test_journal_case(&jcases[i]);
	test_journal_double();
	test_journal_discard();
}

/* ---- main ------------------------------------------------------------------ */

/* ---- caps: --max-messages and --max-bytes ------------------------------ */

#define CAPBOX	FROM1 "A\n\n" FROM2 "BB\n\n" FROM1 "CCC\n"

struct cap_case {
	const char	*name;
	unsigned	 max_messages;
	uint64_t	 max_bytes;
	unsigned	 want_n;
	uint64_t	 want_octets;
};

/* Sizes as sent: 3, 4 and 5 octets. */
static const struct cap_case cap_cases[] = {
	{ "cap/none",		0, 0,	3, 12 },
	{ "cap/messages-2",	2, 0,	2, 7 },
	{ "cap/messages-1",	1, 100,	1, 3 },
	{ "cap/bytes-exact",	0, 7,	2, 7 },
	{ "cap/bytes-between",	0, 6,	1, 3 },
	{ "cap/bytes-below-first", 0, 2, 0, 0 },
	{ "cap/bytes-all",	0, 12,	3, 12 },
	{ "cap/both",		2, 3,	1, 3 },
};

static void
test_cap(const struct cap_case *c)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	uint64_t octets = 0;
	unsigned n = 0;
	int r;

	o.max_messages = c->max_messages;
	o.max_bytes = c->max_bytes;
	write_file(mbpath, S(CAPBOX));
	r = mailbox_open(&mb, mbpath, &o);
	if (r == MB_OK)
		mailbox_stat(mb, &n, &octets);
	result(c->name, r == MB_OK && n == c->want_n &&
	    octets == c->want_octets && mailbox_count(mb) == c->want_n,
	    "r %d n %u octets %llu", r, n, (unsigned long long)octets);
	mailbox_close(mb);
}

/* The messages over a cap are kept by UPDATE like mail appended after the
 * scan, and the next session serves them. */
static void
test_cap_update(void)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	struct buf b = { NULL, 0 };
	uint64_t octets = 0;
	unsigned n = 0;
	int r, ok;

	o.max_messages = 2;
	write_file(mbpath, S(CAPBOX));
	r = mailbox_open(&mb, mbpath, &o);
	if (r == MB_OK) {
		mailbox_delete(mb, 1);
		r = mailbox_update(mb);
	}
	mailbox_close(mb);
	mb = NULL;
	b = read_file(mbpath);
	ok = r == MB_OK && b.len == sizeof(FROM2 "BB\n\n" FROM1 "CCC\n") - 1 &&
	    memcmp(b.p, FROM2 "BB\n\n" FROM1 "CCC\n", b.len) == 0;
	result("cap/update-keeps-rest", ok, "r %d, file %zu octets", r, b.len);
	buf_free(&b);
	r = mailbox_open(&mb, mbpath, &o);
	if (r == MB_OK)
		mailbox_stat(mb, &n, &octets);
	ok = r == MB_OK && n == 2 && octets == 9;
	if (ok && (ok = capture(mb, 2, -1, &b) == MB_OK))
		ok = b.len == sizeof("CCC\r\n.\r\n") - 1 &&
		    memcmp(b.p, "CCC\r\n.\r\n", b.len) == 0;
	result("cap/next-session-sees-rest", ok, "r %d n %u octets %llu", r, n,
	    (unsigned long long)octets);
	buf_free(&b);
	mailbox_close(mb);
}

/* ---- the scan cache ------------------------------------------------- */

/* A pseudo-message, messages with CRLF, a body "From " line, two with the
 * same UIDL (suffix "-2"), and a last one without a final LF. */
#define CACHEBOX FROM1 "Subject: DON'T DELETE THIS MESSAGE -- FOLDER " \
	"INTERNAL DATA\nX-IMAP: 1234567890 0000000002\n\ninternal\n\n" \
	FROM2 "Message-ID: <1@x>\n\nA\n\nFrom here we go\n\n" \
	FROM1 "Message-ID: <2@x>\r\n\r\nBB\r\n\r\n" \
	FROM2 "Message-ID: <dup@x>\n\nC\n\n" \
	FROM2 "Message-ID: <dup@x>\n\nDD\n\n" \
	FROM1 "Message-ID: <3@x>\n\nlast"
#define PSEUDO2BOX FROM2 "Message-ID: <a@x>\n\nA\n\n" FROM1 "Subject: " \
	"DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 7 2\n\n" \
	"internal\n\n" FROM1 "Message-ID: <b@x>\n\nB\n\n" \
	FROM2 "Message-ID: <c@x>\n\nC\n\n" FROM1 "Message-ID: <d@x>\n\nD\n"
#define CACHEMORE "\n\n" FROM2 "Message-ID: <4@x>\n\nnew\n\n" \
	FROM1 "Message-ID: <5@x>\n\nnewer\n"

/* Three messages, the second's body line given (61 octets with its LF). */
#define OLDENDBOX(line) FROM2 "Message-ID: <1@x>\n\nA\n\n" FROM1 \
	"Message-ID: <2@x>\n\n" line "\n" FROM2 "Message-ID: <3@x>\n\nlast\n"

static char cachepath[140];

/* Opens mbpath, with the cache when cfd >= 0; *snap gets the listing
 * (count, then size and UIDL of each message) and *scanned the octets
 * scanned.  Returns the mailbox_open result. */
static int
cache_open(int cfd, char *snap, size_t size, uint64_t *scanned)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	char id[POP3D_UIDL_MAX + 1];
	size_t k;
	unsigned i;
	int r;

	o.cache_fd = cfd;
	snap[0] = '\0';
	if ((r = mailbox_open(&mb, mbpath, &o)) != MB_OK)
		return r;
	*scanned = mailbox_scanned_octets(mb);
	k = (size_t)snprintf(snap, size, "%u:", mailbox_count(mb));
	for (i = 1; i <= mailbox_count(mb) && k < size; i++) {
		mailbox_uidl(mb, i, id);
		k += (size_t)snprintf(snap + k, size - k, " %llu %s",
		    (unsigned long long)mailbox_size(mb, i), id);
	}
	mailbox_close(mb);
	return MB_OK;
}

/* After change() to the files, an open with the cache gives what a full
 * scan gives; used: the cache must have been used (1) or not (0). */
static void
cache_case(const char *name, int cfd, int used)
{
	char want[2048], got[2048];
	uint64_t full = 0, scanned = 0;
	off_t size;
	struct stat st;
	int r1, r2;

	r1 = cache_open(-1, want, sizeof(want), &full);
	r2 = cache_open(cfd, got, sizeof(got), &scanned);
	size = stat(mbpath, &st) == 0 ? st.st_size : -1;
	result(name, r1 == MB_OK && r2 == MB_OK && strcmp(want, got) == 0 &&
	    full == (uint64_t)size && (used ? scanned < full :
	    scanned == full), "r %d %d scanned %llu of %llu; want [%s] got [%s]",
	    r1, r2, (unsigned long long)scanned, (unsigned long long)full,
	    want, got);
}

/* Writes a fresh cache for the current mbpath. */
static void
cache_prime(int cfd)
{
	char snap[2048];
	uint64_t scanned;

	if (ftruncate(cfd, 0) < 0 || cache_open(cfd, snap, sizeof(snap),
	    &scanned) != MB_OK)
		exit(2);
}

/* Changes octet at (negative: from the end) of the cache; with resum,
 * the cache digest is made valid again. */
static void
cache_poke(int cfd, long at, unsigned char xor, int resum)
{
	struct buf b = read_file(cachepath);
	size_t i = at < 0 ? b.len - (size_t)-at : (size_t)at;
	MD5_CTX ctx;

	b.p[i] ^= xor;
	if (resum) {
		MD5Init(&ctx);
		MD5Update(&ctx, b.p, b.len - MD5_DIGEST_LENGTH);
		MD5Final(b.p + b.len - MD5_DIGEST_LENGTH, &ctx);
	}
	if (pwrite(cfd, b.p, b.len, 0) != (ssize_t)b.len)
		exit(2);
	buf_free(&b);
}

/* A session on box deletes message del and quits, with more mail
 * appended during it; the cache it leaves must be used (or not) and list
 * what a full scan lists. */
static void
cache_update_case(const char *name, int cfd, const char *box, unsigned del,
    const char *more, int used)
{
	struct mailbox_opts o = *opts(getuid(), UIDL_DIGEST, 5);
	struct mailbox *mb = NULL;
	int r;

	write_file(mbpath, box, strlen(box));
	o.cache_fd = cfd;
	r = mailbox_open(&mb, mbpath, &o);
	if (r == MB_OK) {
		append_file(mbpath, more, strlen(more));
		mailbox_delete(mb, del);
		r = mailbox_update(mb);
	}
	mailbox_close(mb);
	if (r != MB_OK) {
		result(name, 0, "update: %d", r);
		return;
	}
	cache_case(name, cfd, used);
}

static void
test_cache(void)
{
	char snap[2048], other[sizeof(mbpath)], saved[sizeof(mbpath)];
	uint64_t scanned = 0;
	struct buf b;
	struct stat st;
	int cfd, r;

	snprintf(cachepath, sizeof(cachepath), "%s/cache", dir);
	snprintf(other, sizeof(other), "%s/other", dir);
	cfd = open(cachepath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (cfd < 0)
		exit(2);
	write_file(mbpath, S(CACHEBOX));
	r = cache_open(cfd, snap, sizeof(snap), &scanned);
	result("cache/first-open-scans-and-writes", r == MB_OK &&
	    scanned == sizeof(CACHEBOX) - 1 && fstat(cfd, &st) == 0 &&
	    st.st_size > 0, "r %d scanned %llu", r,
	    (unsigned long long)scanned);
	cache_case("cache/reopen-uses-it", cfd, 1);
	cache_case("cache/reopen-again", cfd, 1);

	append_file(mbpath, S(CACHEMORE));
	cache_case("cache/appended-scans-new-part", cfd, 1);
	cache_case("cache/appended-then-unchanged", cfd, 1);

	/* same size, a later mtime, other content before the last 4096
	 * octets and outside the headers: only the mtime tells */
	b = read_file(mbpath);
	b.p = realloc(b.p, b.len + 6000);
	if (b.p == NULL)
		exit(2);
	memset(b.p + b.len, 'x', 6000);
	memcpy(b.p + b.len, "\n\n" FROM2 "\n", sizeof("\n\n" FROM2 "\n") - 1);
	b.p[b.len + 5999] = '\n';
	b.len += 6000;
	write_file(mbpath, b.p, b.len);
	cache_prime(cfd);
	((unsigned char *)memmem(b.p, b.len, "BB", 2))[0] ^= 1;
	write_file(mbpath, b.p, b.len);
	buf_free(&b);
	cache_case("cache/same-size-rewrite", cfd, 0);

	/* the From_ line where the scan would resume made invalid (its
	 * year), beyond the last 4096 octets, then mail appended */
	b = read_file(mbpath);
	cache_prime(cfd);
	b.p[b.len - 6000 + 2 + sizeof(FROM2) - 3] = 'X';
	write_file(mbpath, b.p, b.len);
	buf_free(&b);
	append_file(mbpath, S(CACHEMORE));
	cache_case("cache/resume-line-invalid", cfd, 0);

	write_file(mbpath, S(CACHEBOX));
	cache_prime(cfd);
	write_file(mbpath, S(FROM2 "Message-ID: <1@x>\n\nA\n"));
	cache_case("cache/shorter-file", cfd, 0);

	write_file(mbpath, S(CACHEBOX));
	cache_prime(cfd);
	write_file(other, S(CACHEBOX CACHEMORE));
	if (rename(other, mbpath) < 0)
		exit(2);
	cache_case("cache/other-inode", cfd, 0);

	/* appended mail that keeps size and the old end but not the rest:
	 * the file rewritten in place, one message shorter, then longer */
	write_file(mbpath, S(CACHEBOX));
	cache_prime(cfd);
	write_file(mbpath, S(FROM2 "Message-ID: <9@x>\n\nAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "\n\n" CACHEBOX));
	cache_case("cache/rewritten-longer", cfd, 0);

	/* a body line of a cached message rewritten in place, same length,
	 * into a blank line and a From_ line (a new message there), then
	 * mail appended: only the digest of the old end tells */
	write_file(mbpath, S(OLDENDBOX("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxx\n")));
	cache_prime(cfd);
	write_file(mbpath, S(OLDENDBOX("\nFrom a@b Wed Jan 24 10:49:06 2011\n"
	    "zzzzzzzzzzzzzzzzzzzzzzzzz\n")));
	append_file(mbpath, S(CACHEMORE));
	cache_case("cache/old-end-rewritten", cfd, 0);

	write_file(mbpath, S(CACHEBOX));
	cache_prime(cfd);
	cache_poke(cfd, 200, 0x40, 0);
	cache_case("cache/corrupt-byte", cfd, 0);
	cache_prime(cfd);
	cache_poke(cfd, -1, 0x01, 0);
	cache_case("cache/corrupt-digest", cfd, 0);
	cache_prime(cfd);
	if (fstat(cfd, &st) < 0 || ftruncate(cfd, st.st_size - 1) < 0)
		exit(2);
	cache_case("cache/truncated", cfd, 0);
	cache_prime(cfd);
	cache_poke(cfd, 88 + 5, 0x10, 1);	/* count: + 2^40 */
	cache_case("cache/absurd-count", cfd, 0);
	cache_prime(cfd);
	cache_poke(cfd, 8, 0x02, 1);		/* version */
	cache_case("cache/other-version", cfd, 0);
	cache_prime(cfd);
	cache_poke(cfd, 96 + 1, 0x01, 1);	/* resume: + 256 */
	cache_case("cache/resume-elsewhere", cfd, 0);
	cache_prime(cfd);
	cache_poke(cfd, 136 + 64 + 25, 0x01, 1); /* message 2: size + 256 */
	cache_case("cache/implausible-size", cfd, 0);

	/* a valid cache of another mailbox */
	cache_prime(cfd);
	write_file(other, S(CACHEBOX));
	memcpy(saved, mbpath, sizeof(mbpath));
	memcpy(mbpath, other, sizeof(mbpath));
	cache_case("cache/other-mailbox", cfd, 0);
	memcpy(mbpath, saved, sizeof(mbpath));

	/* UPDATE drops the cache before it compacts and writes it again
	 * for the compacted file: the next open scans only the last message
	 * and what was appended during the session */
	cache_update_case("cache/after-update", cfd, CACHEBOX, 2, "", 1);
	cache_update_case("cache/after-update-appended", cfd, CACHEBOX, 3,
	    CACHEMORE, 1);
	cache_update_case("cache/after-update-last", cfd, CACHEBOX, 6, "", 1);
	cache_update_case("cache/after-update-first", cfd, CACHEBOX, 1,
	    CACHEMORE, 1);
	/* the first message deleted: the second, with the pseudo-message's
	 * marks, now starts the file and a full scan hides it */
	cache_update_case("cache/after-update-new-pseudo", cfd, PSEUDO2BOX, 1,
	    "", 0);
	cache_update_case("cache/after-update-new-first", cfd, PSEUDO2BOX, 3,
	    "", 1);
	close(cfd);
}

/* ---- PROXY protocol (proxy.c) ----------------------------------------- */

/* The 12-octet v2 signature. */
#define PP2SIG	"\r\n\r\n\0\r\nQUIT\n"

static const struct need_case {
	const char	*name;
	const char	*in;
	size_t		 len;
	long		 want;
} need_cases[] = {
	{ "empty", "", 0, 1 },
	{ "v1-start", "P", 1, 1 },
	{ "v1-partial", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", 31, 1 },
	{ "v1-whole", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32, 0 },
	{ "v1-bare-lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, -1 },
	{ "v1-cr-not-last", "PROXY \rX", 8, -1 },
	{ "v1-lowercase", "proxy", 5, -1 },
	{ "v1-typo", "PROXZ", 5, -1 },
	{ "v1-no-space", "PROXY\r", 6, -1 },
	{ "http", "GET / HTTP/1.0\r\n", 16, -1 },
	{ "pop3-command", "USER bob\r\n", 10, -1 },
	{ "v2-sig-start", "\r", 1, 1 },
	{ "v2-sig", PP2SIG, 12, 4 },
	{ "v2-fixed-part", PP2SIG "\x21\x11\x00\x0c", 16, 12 },
	{ "v2-whole", PP2SIG "\x21\x11\x00\x0c" "\1\2\3\4\5\6\7\10\0\1\0\2",
	  28, 0 },
	{ "v2-bad-sig", "\r\n\r\n\1", 5, -1 },
	{ "v2-version-1", PP2SIG "\x11", 13, -1 },
	{ "v2-too-long", PP2SIG "\x21\x11\xff\xff", 16, -1 },
	{ "v2-pop3-blank-lines", "\r\n\r\nUSER", 8, -1 },
};

static void
test_proxy_need(void)
{
	char line[200], name[64];
	size_t i;

	for (i = 0; i < sizeof(need_cases) / sizeof(need_cases[0]); i++) {
		const struct need_case *c = &need_cases[i];
		long r = proxy_need((const unsigned char *)c->in, c->len);

		snprintf(name, sizeof(name), "proxy-need-%s", c->name);
		result(name, r == c->want, "got %ld, want %ld", r, c->want);
	}
	/* The longest v1 line (107 octets with its CRLF) is whole; no CRLF
	 * within 107 octets is not a header. */
	memset(line, 'f', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	line[105] = '\r';
	line[106] = '\n';
	result("proxy-need-v1-107", proxy_need((unsigned char *)line, 107) == 0,
	    "a 107-octet line is not whole");
	line[105] = 'f';
	result("proxy-need-v1-no-crlf-in-107",
	    proxy_need((unsigned char *)line, 107) == -1,
	    "107 octets without CRLF still wanted more");
}

static const struct parse_case {
	const char	*name;
	const char	*in;
	size_t		 len;
	int		 kind;		/* 0: must fail */
	const char	*src;		/* PROXY_TCP: the client */
	unsigned	 port;
} parse_cases[] = {
	{ "v1-tcp4", "PROXY TCP4 198.51.100.7 127.0.0.1 40000 110\r\n", 0,
	  PROXY_TCP, "198.51.100.7", 40000 },
	{ "v1-tcp4-port0", "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 0,
	  PROXY_TCP, "0.0.0.0", 0 },
	{ "v1-tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 1 110\r\n", 0,
	  PROXY_TCP, "2001:db8::7", 1 },
	{ "v1-tcp6-mapped", "PROXY TCP6 ::ffff:198.51.100.7 ::1 5 110\r\n", 0,
	  PROXY_TCP, "198.51.100.7", 5 },
	{ "v1-unknown", "PROXY UNKNOWN\r\n", 0, PROXY_UNKNOWN, NULL, 0 },
	{ "v1-unknown-rest", "PROXY UNKNOWN ffff::1 ::1 65535 65535\r\n", 0,
	  PROXY_UNKNOWN, NULL, 0 },
	{ "v1-unknown-suffix", "PROXY UNKNOWNX\r\n", 0, 0, NULL, 0 },
	{ "v1-unknown-tab", "PROXY UNKNOWN\tx\r\n", 0, 0, NULL, 0 },
	{ "v1-leading-zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-octet-256", "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-three-octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-five-octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-tcp4-v6-address", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-tcp6-v4-address", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-tcp4-mixed-dst", "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-port-65536", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 0, 0, NULL, 0 },
	{ "v1-port-leading-zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", 0,
	  0, NULL, 0 },
	{ "v1-port-sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", 0, 0, NULL, 0 },
	{ "v1-port-missing", "PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", 0, 0, NULL, 0 },
	{ "v1-extra-field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 0, 0, NULL, 0 },
	{ "v1-two-spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-trailing-space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 0, 0, NULL, 0 },
	{ "v1-tab", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-tcp5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-lowercase-tcp4", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", 0, 0, NULL, 0 },
	{ "v1-nul", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33, 0, NULL, 0 },
	{ "v1-no-crlf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", 0, 0, NULL, 0 },
	{ "v2-tcp4", PP2SIG "\x21\x11\x00\x0c" "\xc6\x33\x64\x07\x7f\0\0\1"
	  "\x9c\x40\0\x6e", 28, PROXY_TCP, "198.51.100.7", 40000 },
	{ "v2-tcp6", PP2SIG "\x21\x21\x00\x24"
	  "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x07"
	  "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01" "\0\1\0\x6e", 52,
	  PROXY_TCP, "2001:db8::7", 1 },
	{ "v2-tcp6-mapped", PP2SIG "\x21\x21\x00\x24"
	  "\0\0\0\0\0\0\0\0\0\0\xff\xff\xc6\x33\x64\x07"
	  "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01" "\0\1\0\x6e", 52,
	  PROXY_TCP, "198.51.100.7", 1 },
	{ "v2-tcp4-tlvs", PP2SIG "\x21\x11\x00\x17" "\xc6\x33\x64\x07\x7f\0\0\1"
	  "\x9c\x40\0\x6e" "\x04\x00\x03xyz" "\x05\x00\x02id", 39,
	  PROXY_TCP, "198.51.100.7", 40000 },
	{ "v2-tcp4-tlv-empty", PP2SIG "\x21\x11\x00\x0f" "\xc6\x33\x64\x07"
	  "\x7f\0\0\1\x9c\x40\0\x6e" "\x04\x00\x00", 31,
	  PROXY_TCP, "198.51.100.7", 40000 },
	{ "v2-local", PP2SIG "\x20\x00\x00\x00", 16, PROXY_LOCAL, NULL, 0 },
	{ "v2-local-with-block", PP2SIG "\x20\x11\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, PROXY_LOCAL, NULL, 0 },
	{ "v2-proxy-unspec", PP2SIG "\x21\x00\x00\x00", 16, PROXY_UNKNOWN,
	  NULL, 0 },
	{ "v2-proxy-udp4", PP2SIG "\x21\x12\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, PROXY_UNKNOWN, NULL, 0 },
	{ "v2-version-3", PP2SIG "\x31\x11\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, 0, NULL, 0 },
	{ "v2-command-2", PP2SIG "\x22\x11\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, 0, NULL, 0 },
	{ "v2-family-4", PP2SIG "\x21\x41\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, 0, NULL, 0 },
	{ "v2-transport-3", PP2SIG "\x21\x13\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, 0, NULL, 0 },
	{ "v2-tcp4-short-block", PP2SIG "\x21\x11\x00\x0b" "\1\2\3\4\5\6\7\10"
	  "\0\1\0", 27, 0, NULL, 0 },
	{ "v2-tcp6-short-block", PP2SIG "\x21\x21\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2", 28, 0, NULL, 0 },
	{ "v2-tlv-overrun", PP2SIG "\x21\x11\x00\x10" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2" "\x04\x00\x05x", 32, 0, NULL, 0 },
	{ "v2-tlv-cut-header", PP2SIG "\x21\x11\x00\x0e" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2" "\x04\x00", 30, 0, NULL, 0 },
	{ "v2-length-mismatch", PP2SIG "\x21\x11\x00\x0c" "\1\2\3\4\5\6\7\10"
	  "\0\1\0\2" "junk", 32, 0, NULL, 0 },
};

static void
test_proxy_parse(void)
{
	char name[64], text[64];
	size_t i;

	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		size_t len = c->len ? c->len : strlen(c->in);
		struct proxy_hdr h;
		const char *why = NULL;
		int r;

		memset(&h, 0xa5, sizeof(h));
		r = proxy_parse((const unsigned char *)c->in, len, &h, &why);
		snprintf(name, sizeof(name), "proxy-parse-%s", c->name);
		if (c->kind == 0) {
			result(name, r == -1 && why != NULL,
			    "accepted (kind %u)", (unsigned)h.kind);
			continue;
		}
		if (r != 0) {
			result(name, 0, "refused: %s", why ? why : "?");
			continue;
		}
		if (h.kind != (uint32_t)c->kind) {
			result(name, 0, "kind %u, want %d", (unsigned)h.kind,
			    c->kind);
			continue;
		}
		if (c->src == NULL) {
			result(name, proxy_hdr_check(&h), "record not valid");
			continue;
		}
		proxy_addr_str(&h.src, text, sizeof(text));
		result(name, strcmp(text, c->src) == 0 && h.src.port ==
		    c->port && proxy_hdr_check(&h), "client %s port %u",
		    text, (unsigned)h.src.port);
	}
}

static const struct list_case {
	const char	*list;
	int		 count;		/* -1: refused */
	const char	*in;		/* addresses that match, ';'-separated */
	const char	*out;		/* addresses that do not */
} list_cases[] = {
	{ "127.0.0.1", 1, "127.0.0.1;::ffff:127.0.0.1", "127.0.0.2;::1" },
	{ "127.0.0.1,::1", 2, "127.0.0.1;::1", "::2;10.0.0.1" },
	{ "10.0.0.0/8,2001:db8::/32", 2, "10.0.0.0;10.255.1.2;2001:db8:ff::9",
	  "11.0.0.0;9.255.255.255;2001:db9::;::ffff:11.0.0.1" },
	{ "192.168.1.128/25", 1, "192.168.1.128;192.168.1.255",
	  "192.168.1.127;192.168.2.128" },
	{ "::ffff:10.0.0.0/104", 1, "10.1.1.1", "11.1.1.1" },
	{ "0.0.0.0/0", 1, "1.2.3.4;255.255.255.255", "::1" },
	{ "::/0", 1, "::1;2001:db8::1", "1.2.3.4" },
	{ "2001:db8::1/128", 1, "2001:db8::1", "2001:db8::2" },
	{ "", -1, "", "" },
	{ "10.0.0.1/8", -1, "", "" },
	{ "10.0.0.0/33", -1, "", "" },
	{ "::/129", -1, "", "" },
	{ "10.0.0.0/", -1, "", "" },
	{ "10.0.0.0/08", -1, "", "" },
	{ "a.b.c.d", -1, "", "" },
	{ "127.0.0.1,", -1, "", "" },
	{ ",127.0.0.1", -1, "", "" },
	{ "127.0.0.1 ", -1, "", "" },
	{ "localhost", -1, "", "" },
	{ "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,"
	  "25,26,27,28,29,30,31,32,33", -1, "", "" },
};

/* Checks each ';'-separated address of addrs against nets. */
static int
list_matches(const struct proxy_net *nets, int n, const char *addrs,
    int want, char *bad, size_t size)
{
	char buf[256], *p, *save = NULL;
	struct proxy_addr a;

	snprintf(buf, sizeof(buf), "%s", addrs);
	for (p = strtok_r(buf, ";", &save); p; p = strtok_r(NULL, ";", &save))
		if (proxy_addr_parse(p, &a) < 0 ||
		    proxy_list_match(nets, (size_t)n, &a) != want) {
			snprintf(bad, size, "%s", p);
			return 0;
		}
	return 1;
}

static void
test_proxy_list(void)
{
	struct proxy_net nets[POP3D_PROXY_FROM_MAX];
	char name[80], bad[64] = "";
	size_t i;

	for (i = 0; i < sizeof(list_cases) / sizeof(list_cases[0]); i++) {
		const struct list_case *c = &list_cases[i];
		const char *why = NULL;
		int n = proxy_list_parse(c->list, nets, POP3D_PROXY_FROM_MAX,
		    &why);

		snprintf(name, sizeof(name), "proxy-list-%zu", i);
		if (n != c->count || (n < 0 && why == NULL))
			result(name, 0, "%s: count %d, want %d", c->list, n,
			    c->count);
		else if (n > 0 && !list_matches(nets, n, c->in, 1, bad,
		    sizeof(bad)))
			result(name, 0, "%s: %s does not match", c->list, bad);
		else if (n > 0 && !list_matches(nets, n, c->out, 0, bad,
		    sizeof(bad)))
			result(name, 0, "%s: %s matches", c->list, bad);
		else
			result(name, 1, "%s", "");
	}
}

/* The records the root parent must refuse from the pre-auth child. */
static void
test_proxy_hdr_check(void)
{
	struct proxy_hdr h;
	int ok = 1;

	memset(&h, 0, sizeof(h));
	h.kind = PROXY_TCP;
	h.src.family = h.dst.family = AF_INET;
	ok &= proxy_hdr_check(&h) == 1;
	h.src.family = 99;
	ok &= proxy_hdr_check(&h) == 0;
	h.src.family = AF_INET6;
	h.dst.family = AF_UNIX;
	ok &= proxy_hdr_check(&h) == 0;
	h.dst.family = AF_INET6;
	ok &= proxy_hdr_check(&h) == 1;
	h.src.family = AF_INET6;
	memcpy(h.src.addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff\1\2\3\4", 16);
	ok &= proxy_hdr_check(&h) == 0;		/* mapped: should be AF_INET */
	memset(&h, 0, sizeof(h));
	h.kind = PROXY_LOCAL;
	ok &= proxy_hdr_check(&h) == 1;
	h.kind = 0;
	ok &= proxy_hdr_check(&h) == 0;
	h.kind = PROXY_UNKNOWN + 1;
	ok &= proxy_hdr_check(&h) == 0;
	result("proxy-hdr-check", ok, "a bad record passed, or a good one not");
}

/*
 * proxy_read takes the header and nothing after it: the pipe keeps the
 * POP3 line that followed; a 15-octet header with nothing after it is
 * read without waiting for more (the writer stays open, so a read past
 * it would wait out the limit).
 */
static void
test_proxy_read(void)
{
	static const char v1[] = "PROXY TCP4 198.51.100.7 127.0.0.1 1 110\r\n";
	static const char v2[] = PP2SIG "\x21\x11\x00\x0f" "\1\2\3\4\5\6\7\10"
	    "\0\1\0\2" "\x04\x00\x00";
	unsigned char buf[POP3D_PROXY_MAX];
	struct io_limit lim = { 0, 5 };
	char rest[16] = "";
	size_t len = 0;
	int p[2], r;

	if (pipe(p) < 0)
		return;
	r = write(p[1], v1, sizeof(v1) - 1) < 0 ||
	    write(p[1], "QUIT\r\n", 6) < 0;
	r = r || proxy_read(p[0], &lim, buf, &len) < 0;
	r = r || read(p[0], rest, 6) != 6;
	result("proxy-read-v1-exact", !r && len == sizeof(v1) - 1 &&
	    memcmp(rest, "QUIT\r\n", 6) == 0, "len %zu, then %.6s", len, rest);
	r = write(p[1], v2, sizeof(v2) - 1) < 0 ||
	    write(p[1], "\x16\x03\x01", 3) < 0;	/* a TLS ClientHello starts */
	r = r || proxy_read(p[0], &lim, buf, &len) < 0;
	r = r || read(p[0], rest, 3) != 3;
	result("proxy-read-v2-exact", !r && len == sizeof(v2) - 1 &&
	    memcmp(rest, "\x16\x03\x01", 3) == 0, "len %zu", len);
	r = write(p[1], "PROXY UNKNOWN\r\n", 15) < 0;
	r = r || proxy_read(p[0], &lim, buf, &len) < 0;
	result("proxy-read-short-header", !r && len == 15, "len %zu", len);
	r = write(p[1], "USER bob\r\n", 10) < 0;
	errno = 0;
	r = r || proxy_read(p[0], &lim, buf, &len) != -1 || errno != EPROTO;
	result("proxy-read-not-a-header", !r, "errno %d", errno);
	close(p[1]);
	close(p[0]);
}

static void
cleanup(void)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

int
main(int argc, char **argv)
{
	size_t i;

	log_init(getenv("UNIT_DEBUG") != NULL);
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "--journal-child") == 0)
		return journal_child(argc, argv);
	snprintf(dir, sizeof(dir), "/tmp/pop3d-unit.XXXXXX");
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(mbpath, sizeof(mbpath), "%s/mbox", dir);
	snprintf(lockpath, sizeof(lockpath), "%s.lock", mbpath);

	for (i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++)
		test_line(&line_cases[i]);
	for (i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++)
		test_fixture(&fixtures[i]);
	test_missing();
	test_block_boundaries();
	test_body_run();
	test_giant_lines();
	test_pseudo_untrusted();
	test_dele_rset();
	for (i = 0; i < sizeof(top_cases) / sizeof(top_cases[0]); i++)
		test_top(&top_cases[i]);
	for (i = 0; i < sizeof(emit_cases) / sizeof(emit_cases[0]); i++)
		test_emit(&emit_cases[i]);
	test_uidl_digest();
	for (i = 0; i < sizeof(uidl_cases) / sizeof(uidl_cases[0]); i++)
		test_uidl(&uidl_cases[i]);
	test_uidl_format_check();
	test_uidl_stable();
	test_change();
	for (i = 0; i < sizeof(update_cases) / sizeof(update_cases[0]); i++)
		test_update(&update_cases[i]);
	test_update_large();
	test_locks();
	test_open_checks();
	test_many();
	test_journal();
	for (i = 0; i < sizeof(cap_cases) / sizeof(cap_cases[0]); i++)
		test_cap(&cap_cases[i]);
	test_cap_update();
	test_cache();
	for (i = 0; i < sizeof(plan_cases) / sizeof(plan_cases[0]); i++)
		test_plan(&plan_cases[i]);
	test_plan_gen();
	test_proxy_need();
	test_proxy_parse();
	test_proxy_list();
	test_proxy_hdr_check();
	test_proxy_read();

	cleanup();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
