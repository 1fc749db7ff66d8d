/*
 * io.c: the bounded line reader from the client, the buffered reply
 * writer to it, the retry loops of read/write/pread/pwrite (read_full,
 * write_full, read_at, write_at), and message output: LF->CRLF and
 * dot-stuffing (out_emit).  Timeouts use poll() on the input and on the
 * output, never alarm(); no call here waits for the client past its
 * io_limit.
 * Calls: log.c.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io.h"

int64_t
io_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
io_wait_end(const struct io_limit *lim)
{
	int64_t end = 0;

	if (lim == NULL)
		return 0;
	if (lim->idle > 0)
		end = io_now() + (int64_t)lim->idle * 1000;
	if (lim->end > 0 && (end == 0 || lim->end < end))
		end = lim->end;
	return end;
}

/*
 * Waits until fd has one of events or end (io_now() time, 0: never)
 * passes; once it has passed, only looks.  Returns 1 when ready (or in
 * error: the next read or write tells), 0 at the end, -1 on error.
 */
static int
wait_fd(int fd, short events, int64_t end)
{
	struct pollfd pfd;
	int r;

	pfd.fd = fd;
	pfd.events = events;
	for (;;) {
		int64_t left = end > 0 ? end - io_now() : -1;

		if (end > 0 && left < 0)
			left = 0;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 1;
		if (r == 0 && (end == 0 || io_now() < end))
			continue;	/* woke early, or a wait longer than INT_MAX */
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

void
in_init(struct in *in, int fd, const struct io_limit *limit)
{
	in->fd = fd;
	in->limit = limit;
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
in_fill(struct in *in)
{
	int64_t end = io_wait_end(in->limit);
	ssize_t n;
	int r;

	if (in->eof)
		return IN_EOF;
	if (in->start > 0) {
		memmove(in->buf, in->buf + in->start, in->end - in->start);
		in->end -= in->start;
		in->start = 0;
	}
	/* Past the end nothing more is read, even when input is waiting: a
	 * client that keeps us busy does not keep the session for that. */
	if (end > 0 && io_now() >= end)
		return IN_TIMEOUT;
	r = wait_fd(in->fd, POLLIN, end);
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
in_line(struct in *in, struct out *out, char *line, size_t max)
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
			return out->timedout ? IN_TIMEOUT : IN_EOF;
		r = in_fill(in);
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

int
io_kind(int fd)
{
	struct stat st;

	if (fstat(fd, &st) == 0) {
		if (S_ISSOCK(st.st_mode))
			return OUT_SOCKET;
		if (S_ISREG(st.st_mode))
			return OUT_FILE;
	}
	return OUT_POLL;
}

void
out_init(struct out *out, int fd, const struct io_limit *limit)
{
	out->fd = fd;
	out->kind = io_kind(fd);
	out->limit = limit;
	out->error = 0;
	out->timedout = 0;
	out->len = 0;
}

/* Reads exactly len bytes.  Returns 0, or -1 on EOF, error or (errno
 * ETIMEDOUT) when lim ends a wait. */
int
read_full(int fd, void *buf, size_t len, const struct io_limit *lim)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n;
		int r = lim ? wait_fd(fd, POLLIN, io_wait_end(lim)) : 1;

		if (r == 0)
			errno = ETIMEDOUT;
		if (r <= 0)
			return -1;
		n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			errno = 0;		/* end of file */
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

/*
 * Writes some of p to the client without blocking on it: a socket with
 * MSG_DONTWAIT (the flag is per call; O_NONBLOCK would change a
 * description that inetd or a shell may share), a pipe or tty only after
 * poll() said there is room, and then at most PIPE_BUF octets, which a
 * pipe with room takes without blocking.  Returns what write() does.
 */
ssize_t
io_write_some(int fd, int kind, const void *p, size_t len)
{
	switch (kind) {
	case OUT_SOCKET:
		return send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	case OUT_FILE:
		return write(fd, p, len);
	default:
		return write(fd, p, len < PIPE_BUF ? len : PIPE_BUF);
	}
}

static ssize_t
out_some(struct out *out, const unsigned char *p, size_t len)
{
	return io_write_some(out->fd, out->kind, p, len);
}

/*
 * Moves both directions to fd, a socket (the TLS process's plaintext
 * end).  Input buffered but not yet read is wiped and dropped: it came
 * before the switch, and a command pipelined after STLS must never run
 * (CVE-2011-0411).  The output must have been flushed.
 */
void
io_switch(struct in *in, struct out *out, int fd)
{
	explicit_bzero(in->buf, sizeof(in->buf));
	in->start = in->end = 0;
	in->eof = 0;
	in->fd = fd;
	out->fd = fd;
	out->kind = OUT_SOCKET;
	out->len = 0;
}

/* Each wait for room restarts an idle limit: a client that reads slowly
 * but steadily is served; one that stops reading is not waited for. */
int
out_flush(struct out *out)
{
	size_t off = 0;

	while (!out->error && off < out->len) {
		ssize_t n;
		int r = 1;

		if (out->kind == OUT_POLL)
			r = wait_fd(out->fd, POLLOUT, io_wait_end(out->limit));
		if (r > 0) {
			n = out_some(out, out->buf + off, out->len - off);
			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				r = wait_fd(out->fd, POLLOUT,
				    io_wait_end(out->limit));
			else
				r = -1;
		}
		if (r == 0)
			out->timedout = 1;
		if (r <= 0)
			out->error = 1;
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

/* Reads len octets at off.  Returns the count read (short only at EOF),
 * or -1 with errno set. */
ssize_t
read_at(int fd, unsigned char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done,
		    off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Writes len octets at off.  Returns 0, or -1 with errno set. */
int
write_at(int fd, const unsigned char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done,
		    off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/* ---- message output: LF->CRLF and dot-stuffing -------------------- */

void
out_emit_init(struct emit *em)
{
	em->bol = 1;
	em->cr = 0;
}

void
out_emit(struct out *out, const unsigned char *p, size_t len,
    struct emit *em)
{
	while (len > 0) {
		const unsigned char *lf;
		size_t n;

		if (em->bol && p[0] == '.')
			out_write(out, ".", 1);
		lf = memchr(p, '\n', len);
		n = lf != NULL ? (size_t)(lf - p) : len;
		if (n > 0) {
			out_write(out, p, n);
			em->cr = p[n - 1] == '\r';
			em->bol = 0;
		}
		if (lf == NULL)
			break;
		/* a stored CRLF stays one CRLF */
		out_write(out, em->cr ? "\n" : "\r\n", em->cr ? 1 : 2);
		em->bol = 1;
		em->cr = 0;
		p += n + 1;
		len -= n + 1;
	}
}

void
out_emit_end(struct out *out, struct emit *em)
{
	if (!em->bol)
		out_write(out, em->cr ? "\n" : "\r\n", em->cr ? 1 : 2);
	out_write(out, ".\r\n", 3);
	out_emit_init(em);
}
