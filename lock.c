/*
 * lock.c: the mailbox locks (DESIGN 5): fcntl, then a dotlock through
 * liblockfile, never waiting for one while holding the other, with a
 * random back-off and a total timeout; and the settling wait for the
 * clock to pass the scanned mtime.
 * Calls: log.c.
 */
#include <sys/stat.h>
#include <sys/types.h>


#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <md5.h>
#include <xxhash.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "mailbox_int.h"

/* ---- locking -------------------------------------------------------- */

static void
lock_fcntl_release(struct mailbox *mb)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(mb->fd, F_SETLK, &fl) < 0)
		logmsg(LOG_ERR, "%s: fcntl unlock: %s", mb->path,
		    strerror(errno));
}

/* One attempt at both locks, never waiting.  Returns 1 locked, 0 busy
 * (nothing held), -1 error (nothing held). */
static int
lock_try(struct mailbox *mb)
{
	struct flock fl;
	int r;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(mb->fd, F_SETLK, &fl) < 0) {
		if (errno == EAGAIN || errno == EACCES || errno == EINTR)
			return 0;
		logmsg(LOG_ERR, "%s: fcntl lock: %s", mb->path,
		    strerror(errno));
		return -1;
	}
	/* A PID in a dotlock means something only on the host that wrote
	 * it: on shared storage liblockfile must judge it by its age */
	r = lockfile_create(mb->lockpath, 0, mb->shared ? 0 : L_PID);
	if (r == L_SUCCESS)
		return 1;
	lock_fcntl_release(mb);
	if (r == L_MAXTRYS)
		return 0;
	logmsg(LOG_ERR, "%s: cannot create the dotlock (liblockfile %d): %s",
	    mb->lockpath, r, strerror(errno));
	return -1;
}

static long
ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t0->tv_sec) * 1000 +
	    (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void
sleep_ms(long ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Takes the fcntl lock and the dotlock without ever waiting for one while
 * holding the other (procmail and Postfix take them in opposite orders):
 * when either is busy both are released and we back off a random short
 * time, for at most lock_timeout seconds.  Returns MB_OK or MB_TEMP.
 */
int
lock_take(struct mailbox *mb)
{
	struct timespec t0;
	long limit = (long)mb->lock_timeout * 1000;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int r = lock_try(mb);

		if (r > 0) {
			mb->locked = 1;
			return MB_OK;
		}
		if (r < 0)
			return MB_TEMP;
		if (ms_since(&t0) >= limit) {
			logmsg(LOG_NOTICE, "%s: still locked after %d s",
			    mb->path, mb->lock_timeout);
			return MB_LOCKED;
		}
		sleep_ms(POP3D_LOCK_BACKOFF_MIN + (long)arc4random_uniform(
		    POP3D_LOCK_BACKOFF_MAX - POP3D_LOCK_BACKOFF_MIN + 1));
	}
}

void
lock_release(struct mailbox *mb)
{
	if (!mb->locked)
		return;
	if (lockfile_remove(mb->lockpath) < 0)
		logmsg(LOG_ERR, "%s: cannot remove the dotlock: %s",
		    mb->lockpath, strerror(errno));
	lock_fcntl_release(mb);
	mb->locked = 0;
}

/*
 * Waits, still holding the locks, until the clock is past the mtime
 * scanned, so that the next write by anyone gives a different mtime; at
 * most ms milliseconds.  Returns whether it is past.  File times come
 * from the coarse clock; an mtime with zero nanoseconds suggests a
 * filesystem with whole seconds.
 */
int
lock_settle(const struct mailbox *mb, long ms)
{
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (now.tv_sec > mb->mtime.tv_sec ||
		    (now.tv_sec == mb->mtime.tv_sec && mb->mtime.tv_nsec != 0 &&
		    now.tv_nsec > mb->mtime.tv_nsec))
			return 1;
		if (ms_since(&t0) >= ms)
			return 0;
		sleep_ms(1);
	}
}
