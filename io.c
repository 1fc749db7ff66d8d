/*
 * io.c: the bounded line reader from the client and the buffered reply
 * writer to it.  Timeouts use poll() on the input, never alarm().
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

void
in_init(struct in *in, int fd)
{
	in->fd = fd;
	in->start = in->end = 0;
	in->eof = 0;
}

/* Returns 0, or -1 when the bytes do not fit. */
int
in_preload(struct in *in, const void *p, size_t len)
{
	if (len > sizeof(in->buf) - in->end)
		return -1;
	memcpy(in->buf + in->end, p, len);
	in->end += len;
	return 0;
}

size_t
in_pending(const struct in *in)
{
	return in->end - in->start;
}

/* Reads more input into the buffer.  Returns IN_LINE when bytes came,
 * else IN_EOF, IN_TIMEOUT or IN_ERROR. */
static int
in_fill(struct in *in, int timeout_sec)
{
	struct pollfd pfd;
	ssize_t n;
	int r;

	if (in->eof)
		return IN_EOF;
	if (in->start > 0) {
		memmove(in->buf, in->buf + in->start, in->end - in->start);
		in->end -= in->start;
		in->start = 0;
	}
	pfd.fd = in->fd;
	pfd.events = POLLIN;
	do
		r = poll(&pfd, 1, timeout_sec > 0 ? timeout_sec * 1000 : -1);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return IN_ERROR;
	if (r == 0)
		return IN_TIMEOUT;
	do
		n = read(in->fd, in->buf + in->end, sizeof(in->buf) - in->end);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return IN_ERROR;
	if (n == 0) {
		in->eof = 1;
		return IN_EOF;
	}
	in->end += (size_t)n;
	return IN_LINE;
}

/*
 * A line is complete at LF; a CR before it is dropped.  Bytes beyond max
 * are discarded up to the LF so one overlong line gets exactly one answer.
 */
int
in_line(struct in *in, struct out *out, char *line, size_t max, int timeout_sec)
{
	size_t len = 0;
	int toolong = 0, nul = 0, r;

	for (;;) {
		unsigned char *p = in->buf + in->start;
		size_t avail = in->end - in->start;
		unsigned char *lf = memchr(p, '\n', avail);
		size_t take = lf ? (size_t)(lf - p) + 1 : avail;

		if (!toolong && len + take > max)
			toolong = 1;
		if (!toolong) {
			memcpy(line + len, p, take);
			len += take;
		}
		if (memchr(p, '\0', lf ? take - 1 : take))
			nul = 1;
		explicit_bzero(p, take);	/* a password may be in it */
		in->start += take;
		if (lf)
			break;
		if (in->start == in->end && out_flush(out) < 0)
			return IN_EOF;
		r = in_fill(in, timeout_sec);
		if (r != IN_LINE)
			return r;
	}
	if (toolong)
		return IN_LONG;
	if (nul)
		return IN_NUL;
	len--;				/* the LF */
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	return IN_LINE;
}

void
out_init(struct out *out, int fd)
{
	out->fd = fd;
	out->error = 0;
	out->len = 0;
	out->total = 0;
}

/* Reads exactly len bytes.  Returns 0, or -1 on EOF or error. */
int
read_full(int fd, void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes exactly len bytes.  Returns 0 or -1. */
int
write_full(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
out_flush(struct out *out)
{
	if (!out->error && out->len > 0) {
		if (write_full(out->fd, out->buf, out->len) < 0)
			out->error = 1;
		else
			out->total += out->len;
	}
	out->len = 0;
	return out->error ? -1 : 0;
}

void
out_write(struct out *out, const void *p, size_t len)
{
	const unsigned char *s = p;

	while (len > 0) {
		size_t room = sizeof(out->buf) - out->len, n;

		if (room == 0) {
			out_flush(out);
			continue;
		}
		n = len < room ? len : room;
		memcpy(out->buf + out->len, s, n);
		out->len += n;
		s += n;
		len -= n;
	}
}

void
out_str(struct out *out, const char *s)
{
	out_write(out, s, strlen(s));
}

void
out_printf(struct out *out, const char *fmt, ...)
{
	char buf[512];		/* RFC 2449: a reply line is at most 512 octets */
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	out_write(out, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}
