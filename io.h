/*
 * io.h: the bounded line reader from the client and the buffered reply
 * writer to it.  The session talks to an input fd and an output fd, never
 * to 0 and 1 by name, so a TLS relay can sit in between later.
 */
#ifndef IO_H
#define IO_H

#include <stddef.h>
#include "pop3d.h"

struct in {
	int		 fd;
	size_t		 start, end;		/* unread bytes: buf[start..end) */
	int		 eof;
	unsigned char	 buf[POP3D_INBUF];
};

struct out {
	int		 fd;
	int		 error;			/* a write failed: client gone */
	size_t		 len;
	uint64_t	 total;			/* octets written, for the log */
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

void	in_init(struct in *, int fd);
/* Preloads unread bytes (input that the pre-auth child had buffered). */
int	in_preload(struct in *, const void *, size_t);
/* Reads one line of at most max octets with its line end into line[]
 * (which has room for max + 1); flushes out first when no input is
 * buffered.  Returns one of the IN_ codes. */
int	in_line(struct in *, struct out *, char *line, size_t max,
	    int timeout_sec);
/* Bytes buffered but not yet returned. */
size_t	in_pending(const struct in *);

/* Read or write exactly len bytes, retrying on EINTR and short counts.
 * Return 0, or -1 on error (or, reading, on end of file). */
int	read_full(int fd, void *buf, size_t len);
int	write_full(int fd, const void *buf, size_t len);

void	out_init(struct out *, int fd);
void	out_write(struct out *, const void *, size_t);
void	out_str(struct out *, const char *);
void	out_printf(struct out *, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/* Returns 0, or -1 when the client is gone (out->error set). */
int	out_flush(struct out *);

#endif
