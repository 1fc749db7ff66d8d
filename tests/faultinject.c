/*
 * tests/faultinject.c: an LD_PRELOAD shim for the crash tests.  It counts
 * the write points on chosen files -- write, pwrite, pwrite64, fsync,
 * fdatasync, ftruncate, ftruncate64, posix_fallocate(64), fallocate(64)
 * on a descriptor whose path (readlink of /proc/self/fd/N) is in
 * FAULT_PATHS -- and at the Nth one acts:
 *
 *   FAULT_PATHS=P1:P2...	absolute paths; an entry "*SUFFIX" matches any
 *				path ending in SUFFIX (e.g. "*.journal")
 *   FAULT_KILL_AT=N		SIGKILL the process at the Nth point,
 *   FAULT_MODE=before|after	before the call is made (default) or after
 *   FAULT_ENOSPC_AT=N		the Nth call fails with ENOSPC
 *   FAULT_EIO_AT=N		the Nth call fails with EIO
 *   FAULT_LOG=FILE		appends "N call path offset length" per point
 *
 * Counting is per process; nothing else is changed.
 */
#include <sys/types.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long count;

static unsigned long
env_num(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? strtoul(v, NULL, 10) : 0;
}

static void *
real(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (f == NULL)
		abort();
	return f;
}

/* Is fd one of the files in FAULT_PATHS?  Fills path. */
static int
watched(int fd, char *path, size_t size)
{
	const char *list = getenv("FAULT_PATHS"), *p, *e;
	char link[64];
	ssize_t n;
	size_t len, plen;

	if (list == NULL || fd < 0)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, size - 1);
	if (n <= 0)
		return 0;
	path[n] = '\0';
	len = (size_t)n;
	for (p = list; *p != '\0'; p = *e ? e + 1 : e) {
		e = strchr(p, ':');
		if (e == NULL)
			e = p + strlen(p);
		plen = (size_t)(e - p);
		if (plen > 1 && p[0] == '*') {
			if (len >= plen - 1 &&
			    memcmp(path + len - (plen - 1), p + 1, plen - 1) == 0)
				return 1;
		} else if (plen == len && memcmp(path, p, len) == 0)
			return 1;
	}
	return 0;
}

static void
log_point(const char *call, const char *path, long long off, long long len)
{
	const char *logf = getenv("FAULT_LOG");
	ssize_t (*w)(int, const void *, size_t) = real("write");
	char line[PATH_MAX + 128];
	int fd, n;

	if (logf == NULL)
		return;
	n = snprintf(line, sizeof(line), "%lu %s %s %lld %lld\n", count, call,
	    path, off, len);
	fd = open(logf, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	if (fd >= 0 && n > 0) {
		(void)w(fd, line, (size_t)n);
		close(fd);
	}
}

/*
 * Called before each call on any fd.  Returns 0 to make the call, or an
 * errno value to fail it with.  *after is set when the process must be
 * killed once the call is made.
 */
static int
point(int fd, const char *call, long long off, long long len, int *after)
{
	char path[PATH_MAX];
	const char *mode;

	*after = 0;
	if (!watched(fd, path, sizeof(path)))
		return 0;
	count++;
	log_point(call, path, off, len);
	if (count == env_num("FAULT_KILL_AT")) {
		mode = getenv("FAULT_MODE");
		if (mode != NULL && strcmp(mode, "after") == 0)
			*after = 1;
		else
			kill(getpid(), SIGKILL);
	}
	if (count == env_num("FAULT_ENOSPC_AT"))
		return ENOSPC;
	if (count == env_num("FAULT_EIO_AT"))
		return EIO;
	return 0;
}

static void
done(int after)
{
	if (after)
		kill(getpid(), SIGKILL);
}

#define SYSCALL_BODY(call, args, off, len, type, fail)		\
	int after, e = point(fd, call, off, len, &after);		\
	type r;								\
									\
	if (e != 0) {							\
		errno = e;						\
		return fail;						\
	}								\
	r = fn args;							\
	done(after);							\
	return r

ssize_t
write(int fd, const void *buf, size_t n)
{
	ssize_t (*fn)(int, const void *, size_t) = real("write");
	SYSCALL_BODY("write", (fd, buf, n), -1, (long long)n, ssize_t, -1);
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	ssize_t (*fn)(int, const void *, size_t, off_t) = real("pwrite");
	SYSCALL_BODY("pwrite", (fd, buf, n, off), (long long)off,
	    (long long)n, ssize_t, -1);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	ssize_t (*fn)(int, const void *, size_t, off64_t) = real("pwrite64");
	SYSCALL_BODY("pwrite", (fd, buf, n, off), (long long)off,
	    (long long)n, ssize_t, -1);
}

int
fsync(int fd)
{
	int (*fn)(int) = real("fsync");
	SYSCALL_BODY("fsync", (fd), -1, 0, int, -1);
}

int
fdatasync(int fd)
{
	int (*fn)(int) = real("fdatasync");
	SYSCALL_BODY("fdatasync", (fd), -1, 0, int, -1);
}

int
ftruncate(int fd, off_t len)
{
	int (*fn)(int, off_t) = real("ftruncate");
	SYSCALL_BODY("ftruncate", (fd, len), (long long)len, 0, int, -1);
}

int
ftruncate64(int fd, off64_t len)
{
	int (*fn)(int, off64_t) = real("ftruncate64");
	SYSCALL_BODY("ftruncate", (fd, len), (long long)len, 0, int, -1);
}

/* posix_fallocate returns the error instead of setting errno. */
int
posix_fallocate(int fd, off_t off, off_t len)
{
	int (*fn)(int, off_t, off_t) = real("posix_fallocate");
	int after, e = point(fd, "fallocate", (long long)off, (long long)len,
	    &after), r;

	if (e != 0)
		return e;
	r = fn(fd, off, len);
	done(after);
	return r;
}

int
posix_fallocate64(int fd, off64_t off, off64_t len)
{
	int (*fn)(int, off64_t, off64_t) = real("posix_fallocate64");
	int after, e = point(fd, "fallocate", (long long)off, (long long)len,
	    &after), r;

	if (e != 0)
		return e;
	r = fn(fd, off, len);
	done(after);
	return r;
}

int
fallocate(int fd, int mode, off_t off, off_t len)
{
	int (*fn)(int, int, off_t, off_t) = real("fallocate");
	SYSCALL_BODY("fallocate", (fd, mode, off, len), (long long)off,
	    (long long)len, int, -1);
}

int
fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	int (*fn)(int, int, off64_t, off64_t) = real("fallocate64");
	SYSCALL_BODY("fallocate", (fd, mode, off, len), (long long)off,
	    (long long)len, int, -1);
}
