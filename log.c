/*
 * log.c: syslog (facility mail, ident pop3d) or, with --debug, stderr;
 * escaping of client strings; allocation wrappers that never return NULL.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "pop3d.h"

static int log_debug;

void
log_init(int debug)
{
	log_debug = debug;
	if (!debug)
		openlog("pop3d", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static void __attribute__((format(printf, 2, 0)))
vlog(int prio, const char *fmt, va_list ap)
{
	if (log_debug) {
		char buf[1024], line[1100];
		int n;

		vsnprintf(buf, sizeof(buf), fmt, ap);
		n = snprintf(line, sizeof(line), "pop3d[%ld]: %s\n",
		    (long)getpid(), buf);
		/* one write(): dprintf's stdio needs calls the pre-auth
		 * child's seccomp filter refuses */
		if (n > 0)
			(void)!write(STDERR_FILENO, line, (size_t)n <
			    sizeof(line) ? (size_t)n : sizeof(line) - 1);
	} else
		vsyslog(prio, fmt, ap);
}

void
logmsg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(prio, fmt, ap);
	va_end(ap);
}

/* Logs the message with strerror(errno) and exits with status 1. */
void
fatal(const char *fmt, ...)
{
	char buf[512];
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	logmsg(LOG_ERR, "%s: %s", buf, strerror(saved));
	_exit(1);
}

/* Logs the message and exits with status 1. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap);
	va_end(ap);
	_exit(1);
}

/*
 * Copies src (len bytes, not necessarily a C string) to dst as printable
 * ASCII: other bytes become \xHH, backslash becomes \\; the result is cut
 * to fit and always terminated.  Returns dst.
 */
char *
log_escape(char *dst, size_t dstsize, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;

	for (i = 0; i < len && dstsize > 0; i++) {
		unsigned char c = (unsigned char)src[i];
		size_t need = (c >= 0x20 && c < 0x7f && c != '\\') ? 1 :
		    c == '\\' ? 2 : 4;

		if (o + need + 1 > dstsize)
			break;
		if (need == 1)
			dst[o++] = (char)c;
		else if (need == 2) {
			dst[o++] = '\\';
			dst[o++] = '\\';
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	if (dstsize > 0)
		dst[o] = '\0';
	return dst;
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
	void *q = reallocarray(p, n ? n : 1, size ? size : 1);

	if (q == NULL)
		fatalx("out of memory");
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}
