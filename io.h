/*
 * io.h: the bounded line reader from the client and the buffered reply
 * writer to it.  The session talks to an input fd and an output fd, never
 * to 0 and 1 by name, so a TLS relay can sit in between later.  No wait
 * for the client, reading or writing, outlasts the session's io_limit.
 */
#ifndef IO_H
#define IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "pop3d.h"

/*
 * How long the client may keep us waiting: each wait (for input, or for
 * room to write) ends at the earlier of `end`, an absolute time of
 * io_now() (0: none), and `idle` seconds after the wait began (0: none).
 * A NULL limit never ends a wait.
 */
struct io_limit {
	int64_t		 end;
	int		 idle;
};

struct in {
	int		 fd;
	const struct io_limit *limit;
	size_t		 start, end;		/* unread bytes: buf[start..end) */
	int		 eof;
	unsigned char	 buf[POP3D_INBUF];
};

/* How out_flush writes to the kind of file its fd is. */
enum { OUT_SOCKET, OUT_FILE, OUT_POLL };

struct out {
	int		 fd;
	int		 kind;			/* OUT_ */
	const struct io_limit *limit;
	int		 error;			/* a write failed: client gone */
	int		 timedout;		/* ... because of the limit */
	size_t		 len;
	unsigned char	 buf[POP3D_OUTBUF];
};

/* What in_line() found. */
enum {
	IN_LINE = 0,	/* a line, without its CRLF or LF, NUL-terminated */
	IN_LONG,	/* longer than the limit: consumed to its end */
	IN_NUL,		/* contained a NUL byte: consumed to its end */
	IN_EOF,		/* end of input (or a line cut off by it) */
	IN_TIMEOUT,	/* nothing arrived within the timeout */
	IN_ERROR	/* read error; errno is set */
};

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t	io_now(void);
/* When a wait that begins now must end under lim (io_now() time), or 0
 * for never. */
int64_t	io_wait_end(const struct io_limit *lim);

void	in_init(struct in *, int fd, const struct io_limit *);
/* Preloads unread bytes (input that the pre-auth child had buffered). */
int	in_preload(struct in *, const void *, size_t);
/* Reads one line of at most max octets with its line end into line[]
 * (which has room for max + 1); flushes out first when no input is
 * buffered.  Returns one of the IN_ codes; IN_TIMEOUT also when the
 * flush ran out of time. */
int	in_line(struct in *, struct out *, char *line, size_t max);
/* Bytes buffered but not yet returned. */
size_t	in_pending(const struct in *);

/* Read or write exactly len bytes, retrying on EINTR and short counts.
 * Return 0, or -1 on error; reading, also at end of file (errno 0) and
 * when lim ended a wait (errno ETIMEDOUT). */
int	read_full(int fd, void *buf, size_t len, const struct io_limit *lim);
int	write_full(int fd, const void *buf, size_t len);
/* Read or write len octets at off (pread/pwrite), retrying on EINTR and
 * short counts.  read_at returns the count read (short only at end of
 * file) or -1; write_at 0 or -1; errno set. */
ssize_t	read_at(int fd, unsigned char *buf, size_t len, off_t off);
int	write_at(int fd, const unsigned char *buf, size_t len, off_t off);

/* The OUT_ kind of fd (fstat), and a write of some of p that does not
 * block on the client when it is a socket, or a pipe that poll() said
 * has room.  Return what write() does. */
int	io_kind(int fd);
ssize_t	io_write_some(int fd, int kind, const void *p, size_t len);
/* Moves both directions to the socket fd, dropping (and wiping) the input
 * buffered so far; out must be flushed (TLS, after STLS). */
void	io_switch(struct in *, struct out *, int fd);

/* fd may be a socket, a pipe, a tty or a regular file, shared with other
 * processes: its file status flags are left alone. */
void	out_init(struct out *, int fd, const struct io_limit *);
void	out_write(struct out *, const void *, size_t);
void	out_str(struct out *, const char *);
void	out_printf(struct out *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Returns 0, or -1 when the client is gone or did not take the output
 * within the limit (out->error set; out->timedout for the latter). */
int	out_flush(struct out *);

/*
 * Streaming LF->CRLF and dot-stuffing, for mailbox_send and the unit
 * tests.  A message is sent as out_emit_init(), any number of
 * out_emit() calls on consecutive pieces of it (split anywhere), then
 * out_emit_end().  A stored CRLF is sent as it is (one CRLF, never
 * CR CR LF); any other LF becomes CRLF.  out_emit_end() completes a
 * last line that has no LF and writes the terminating ".\r\n".
 */
struct emit {
	int	bol;		/* the next octet starts a line */
	int	cr;		/* the last octet written was a CR */
};
void	out_emit_init(struct emit *);
void	out_emit(struct out *, const unsigned char *src, size_t len,
	    struct emit *);
void	out_emit_end(struct out *, struct emit *);

#endif
