/*
 * log.h: syslog (facility mail) or stderr in debug mode, fatal exits and
 * the allocation wrappers that never return NULL (log.c).
 */
#ifndef LOG_H
#define LOG_H

#include <stddef.h>

void	log_init(int debug);
void	log_reopen(void);
int	log_to_stderr(void);
void	logmsg(int prio, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
void	fatal(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
char	*log_escape(char *dst, size_t dstsize, const char *src, size_t len);
void	*xmalloc(size_t n);
void	*xreallocarray(void *p, size_t n, size_t size);
char	*xstrdup(const char *s);

#endif
