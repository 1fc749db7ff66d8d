/*
 * state.c: the state files of a maildrop (DESIGN 11): the state
 * directory, its candidates, the session lock (fcntl, one session per
 * maildrop), the UPDATE journal and scan cache files, the retirement of a
 * former file's state, the note, and maildrop_open(), which a session and
 * --list-uidl share.
 * Calls: priv.c (the drop before the maildrop is opened), mailbox.c
 * (mailbox_file, mailbox_open_fd), auth.c (the maildrop path), log.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <md5.h>

#include "priv.h"
#include "state.h"

/* ---- state files ------------------------------------------------------ */

/*
 * The state of a maildrop file (session lock, UPDATE journal, scan cache)
 * lives in a directory of its user's alone, in files named after the
 * device and inode of the file as the user opened it (the session runs
 * as the user by then): KEY.lock (fcntl: one session per maildrop however
 * it is named; it also holds a note), KEY.journal and KEY.cache.  A user
 * reaches only the state of files she owns, in her own directory, and no
 * path is ever resolved with privileges.  path-DIGEST (the MD5 of the
 * maildrop path as the template gives it) is a symlink to the KEY that
 * path named last: once the path names another file, the old file's
 * state is removed, unless its journal still waits (then no UPDATE until
 * an administrator looks).  So a user's directory holds one set of files
 * per maildrop, plus journals that wait.
 */

/* Syncs directory dir after a name was made in it, so that a power cut
 * cannot take the name back while the file's own fsync stands (POSIX asks
 * for it; ext4, XFS and btrfs persist the name with the file anyway). */
static void
sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		logmsg(LOG_ERR, "%s: fsync: %m", dir);
	if (fd >= 0)
		close(fd);
}

/* mkdir(path, mode), and the parent synced when it made the name.
 * Returns 0 (made, or there already), or -1. */
static int
make_dir(const char *path, mode_t mode)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (mkdir(path, mode) < 0)
		return errno == EEXIST ? 0 : -1;
	(void)chmod(path, mode);			/* umask 077 */
	if (slash != NULL && (size_t)(slash - path) < sizeof(parent)) {
		memcpy(parent, path, (size_t)(slash - path));
		parent[slash - path] = '\0';
		sync_dir(slash == path ? "/" : parent);
	}
	return 0;
}

/* Is path a directory that no one but owner (or root, when root_ok)
 * can change? */
static int
dir_closed(const char *path, uid_t owner, int root_ok)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
	    (st.st_uid == owner || (root_ok && st.st_uid == 0)) &&
	    (st.st_mode & 022) == 0;
}

/*
 * Root mode, before the privilege drop: the system state directory
 * (--state-dir or POP3D_STATE_DIR: root's, writable by no one else; made
 * 0711 when missing, and searchable) and in it UID/, the user's own.
 * Returns 0, or -1.
 */
static int
state_prepare(const struct config *cfg, const struct account *acct)
{
	const char *base = cfg->state_dir ? cfg->state_dir : POP3D_STATE_DIR;
	char dir[PATH_MAX];
	struct stat st;
	int fd, n;

	if (make_dir(base, 0711) < 0 || !dir_closed(base, 0, 0) ||
	    lstat(base, &st) < 0 ||
	    ((st.st_mode & 0111) != 0111 &&
	    chmod(base, (st.st_mode & 07777) | 0111) < 0)) {
		logmsg(LOG_ERR, "%s: not a state directory of root's", base);
		return -1;
	}
	n = snprintf(dir, sizeof(dir), "%s/%lu", base,
	    (unsigned long)acct->uid);
	if (n < 0 || (size_t)n >= sizeof(dir) || make_dir(dir, 0700) < 0)
		return -1;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0 &&
	    (st.st_uid == 0 || st.st_uid == acct->uid) &&
	    fchown(fd, acct->uid, acct->gid) == 0 && fchmod(fd, 0700) == 0) {
		close(fd);
		return 0;
	}
	logmsg(LOG_ERR, "%s: unusable state directory", dir);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A place for state: parent/leaf. */
struct cand {
	char	parent[PATH_MAX];
	char	leaf[64];
	int	primary;	/* may hold the lock (and be made) */
};

#define STATE_CANDS	5

static void
cand_set(struct cand *c, const char *parent, const char *leaf, int primary)
{
	snprintf(c->parent, sizeof(c->parent), "%s", parent);
	snprintf(c->leaf, sizeof(c->leaf), "%s", leaf);
	c->primary = primary;
}

/* dir as a place for state: UID/ in it when it is root's (the system
 * layout), else the directory itself. */
static void
cand_layout(struct cand *c, const char *dir, const struct account *acct,
    int primary)
{
	char uid[32], *slash;

	snprintf(uid, sizeof(uid), "%lu", (unsigned long)acct->uid);
	cand_set(c, dir, uid, primary);
	if (!dir_closed(dir, 0, 0) && (slash = strrchr(c->parent, '/'))) {
		snprintf(c->leaf, sizeof(c->leaf), "%s", slash + 1);
		slash[slash == c->parent] = '\0';	/* "/x" -> "/" */
	}
}

/*
 * Where a maildrop's state may live, in order.  The lock lives in the
 * first primary place that works: with --state-dir only that one; as
 * root, UID/ in POP3D_STATE_DIR; run by hand, UID/ in POP3D_STATE_DIR
 * (made by root mode: the two modes then share it), .pop3d in the passwd
 * entry's home (not $HOME, which su and setpriv may leave at /root),
 * pop3d in $XDG_STATE_HOME, .pop3d-state beside the maildrop.  Every
 * place, primary or not, is searched for a journal a killed session left.
 * Returns the count.
 */
static int
state_candidates(const struct config *cfg, const struct account *acct,
    struct cand *c)
{
	const struct passwd *pw = getpwuid(geteuid());
	const char *xdg = getenv("XDG_STATE_HOME");
	int named = cfg->state_dir != NULL, mine = !named && !cfg->root, k = 0;
	char dir[PATH_MAX], *slash;

	if (named)
		cand_layout(&c[k++], cfg->state_dir, acct, 1);
	if (!named || strcmp(cfg->state_dir, POP3D_STATE_DIR) != 0)
		cand_layout(&c[k++], POP3D_STATE_DIR, acct, !named);
	if (pw != NULL && pw->pw_dir[0] == '/')
		cand_set(&c[k++], pw->pw_dir, ".pop3d", mine);
	if (xdg != NULL && xdg[0] == '/' && !cfg->root)
		cand_set(&c[k++], xdg, "pop3d", mine);
	snprintf(dir, sizeof(dir), "%s", acct->mailbox);
	if ((slash = strrchr(dir, '/')) != NULL) {
		slash[slash == dir] = '\0';
		cand_set(&c[k++], dir, ".pop3d-state", mine);
	}
	return k;
}

/*
 * Is the place c a directory of ours alone (made, when create, if
 * missing)?  Its parent must be ours or root's and writable by no one
 * else, so that no other user can have made or replaced it (unless the
 * user named it herself with --state-dir: named).  Returns 0 with buf
 * set, or -1.
 */
static int
cand_dir(const struct cand *c, int create, int named, char *buf,
    size_t size)
{
	int n;

	if (!named && !dir_closed(c->parent, geteuid(), 1))
		return -1;
	n = snprintf(buf, size, "%s/%s", strcmp(c->parent, "/") == 0 ? "" :
	    c->parent, c->leaf);
	if (n < 0 || (size_t)n >= size || (create && make_dir(buf, 0700) < 0))
		return -1;
	return dir_closed(buf, geteuid(), 0) ? 0 : -1;
}

/* dir/key.ext as a path. */
static const char *
state_path(const char *dir, const char *key, const char *ext, char *buf,
    size_t size)
{
	int n = snprintf(buf, size, "%s/%s.%s", dir, key, ext);

	return n > 0 && (size_t)n < size ? buf : NULL;
}

/* Does dir hold a journal of key that waits? */
static int
journal_waits(const char *dir, const char *key)
{
	char path[PATH_MAX];
	struct stat st;

	return state_path(dir, key, "journal", path, sizeof(path)) != NULL &&
	    lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* Opens (creating) a state file: a regular file of ours with one link.
 * Returns the fd or -1. */
static int
state_file(const char *dir, const char *key, const char *ext)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd = -1;

	if (state_path(dir, key, ext, path, sizeof(path)) != NULL)
		fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY |
		    O_CLOEXEC, 0600);
	if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_nlink == 1 && sb.st_uid == geteuid())
		return fd;
	logmsg(LOG_ERR, "%s/%s.%s: unsafe or unusable state file", dir, key,
	    ext);
	if (fd >= 0)
		close(fd);
	return -1;
}

/*
 * The session lock on fd: a write lock on the whole file, tied to the
 * open file like flock (F_OFD_SETLK: closing another descriptor of the
 * file in this process does not drop it, a second open in one process
 * conflicts), and, unlike flock, carried by the NFS lock manager (NLM,
 * NFSv4), so that hosts sharing --state-dir exclude each other.  Returns 0,
 * or -1 (errno EAGAIN when another holds it).
 */
static int
state_lock_fd(int fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;		/* l_start, l_len 0: the whole file */
	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EACCES)
		errno = EAGAIN;
	return -1;
}

/*
 * Takes the session lock on dir/key.lock.  Since the state of a replaced file is
 * removed (under this lock), the lock counts only while the name still
 * leads to the locked file.  Returns the fd, -1 when another session
 * holds it (EWOULDBLOCK), or -2.
 */
static int
state_flock(const char *dir, const char *key)
{
	char path[PATH_MAX];
	struct stat a, b;
	int fd, tries;

	if (state_path(dir, key, "lock", path, sizeof(path)) == NULL)
		return -2;
	for (tries = 0; tries < 3; tries++) {
		if ((fd = state_file(dir, key, "lock")) < 0)
			return -2;
		if (state_lock_fd(fd) < 0) {
			close(fd);
			return errno == EAGAIN ? -1 : -2;
		}
		if (fstat(fd, &a) == 0 && lstat(path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return fd;
		close(fd);			/* removed meanwhile */
	}
	return -2;
}

/* Is key the form state keys take (DEV-INO in hex)? */
static int
state_key_ok(const char *key)
{
	size_t n = strspn(key, "0123456789abcdef-");

	return n > 0 && key[n] == '\0' && n < STATE_KEY_MAX;
}

/*
 * The path of this maildrop named another file last time (replaced
 * since): removes that file's state under its lock, or, when its journal
 * waits, keeps it and holds back UPDATE; leaves it alone while another
 * session holds it, or on any error.  Then points path-DIGEST at our key.
 */
static void
state_retire(struct state *st, const struct account *acct)
{
	static const char hex[] = "0123456789abcdef";
	static const char *const ext[] = { "cache", "journal", "lock" };
	char link[PATH_MAX], tmp[PATH_MAX + 8], old[STATE_KEY_MAX];
	char name[8 + 2 * MD5_DIGEST_LENGTH], p[PATH_MAX];
	unsigned char d[MD5_DIGEST_LENGTH];
	MD5_CTX ctx;
	ssize_t n;
	size_t i;
	int fd;

	MD5Init(&ctx);
	MD5Update(&ctx, (const unsigned char *)acct->mailbox,
	    strlen(acct->mailbox));
	MD5Final(d, &ctx);
	memcpy(name, "path-", 5);
	for (i = 0; i < sizeof(d); i++) {
		name[5 + 2 * i] = hex[d[i] >> 4];
		name[6 + 2 * i] = hex[d[i] & 15];
	}
	name[5 + 2 * sizeof(d)] = '\0';
	n = snprintf(link, sizeof(link), "%s/%s", st->dir, name);
	if (n < 0 || (size_t)n >= sizeof(link))
		return;
	n = readlink(link, old, sizeof(old) - 1);
	old[n > 0 ? n : 0] = '\0';
	if (strcmp(old, st->key) == 0)
		return;
	if (state_key_ok(old)) {
		if ((fd = state_flock(st->dir, old)) < 0)
			return;		/* a session on the old file, or trouble */
		if (journal_waits(st->dir, old)) {
			logmsg(LOG_ERR, "%s: the journal %s/%s.journal of the "
			    "file this path named before waits; no UPDATE "
			    "until an administrator resolves it (README, "
			    "State files)", acct->mailbox, st->dir, old);
			st->journal_held = 1;
			close(fd);
			return;
		}
		for (i = 0; i < 3; i++)
			if (state_path(st->dir, old, ext[i], p, sizeof(p)))
				(void)unlink(p);
		close(fd);
	}
	(void)snprintf(tmp, sizeof(tmp), "%s.new", link);	/* fits */
	(void)unlink(tmp);
	if (symlink(st->key, tmp) < 0 || rename(tmp, link) < 0)
		logmsg(LOG_WARNING, "%s: %s", link, strerror(errno));
}

/*
 * Takes the state of the maildrop file opened as fd (the session runs as
 * the user): the lock, in the first primary place that works; the
 * journal, from any place where a killed session left one of this file
 * (then under that place's lock too), else the lock's place; the cache
 * (only a hint: -1 when it cannot be opened); and the note the last
 * session left.  Returns R_SENT, R_INUSE, R_SYSTEMP or R_NOSTATE.
 */
static int
state_lock(const struct config *cfg, const struct account *acct, int fd,
    struct state *st)
{
	struct cand c[STATE_CANDS];
	int n = state_candidates(cfg, acct, c), named = !cfg->root &&
	    cfg->state_dir != NULL, i;
	char jdir[PATH_MAX], path[PATH_MAX], note[64];
	struct stat sb;
	ssize_t got;
	int fresh;

	if (fstat(fd, &sb) < 0)
		return R_SYSTEMP;
	/* the device number of one NFS file differs from host to host */
	snprintf(st->key, sizeof(st->key), "%llx-%llx", cfg->shared_spool ? 0ULL :
	    (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino);
	for (i = 0; i < n; i++)
		if (c[i].primary && cand_dir(&c[i], 1, named, st->dir,
		    sizeof(st->dir)) == 0)
			break;
	if (i == n) {
		logmsg(LOG_ERR, "no usable state directory for %s (session "
		    "lock, journal, scan cache); name one with --state-dir",
		    acct->mailbox);
		return R_NOSTATE;
	}
	if ((st->lock_fd = state_flock(st->dir, st->key)) < 0)
		return st->lock_fd == -1 ? R_INUSE : R_SYSTEMP;
	got = pread(st->lock_fd, note, sizeof(note) - 1, 0);
	note[got > 0 ? got : 0] = '\0';
	st->pseudo_ok = got == 0 || strncmp(note, "pseudo=yes\n", 11) == 0;
	snprintf(jdir, sizeof(jdir), "%s", st->dir);
	for (i = 0; i < n && !journal_waits(st->dir, st->key); i++) {
		if (cand_dir(&c[i], 0, named, jdir, sizeof(jdir)) < 0 ||
		    strcmp(jdir, st->dir) == 0 || !journal_waits(jdir, st->key))
			continue;
		if ((st->wait_fd = state_flock(jdir, st->key)) < 0)
			return st->wait_fd == -1 ? R_INUSE : R_SYSTEMP;
		logmsg(LOG_NOTICE, "%s: completing the journal a killed session "
		    "left in %s", acct->mailbox, jdir);
		break;
	}
	if (st->wait_fd < 0)
		snprintf(jdir, sizeof(jdir), "%s", st->dir);
	/* a journal made now: its name must be on disk before an UPDATE
	 * relies on it (the session lock keeps this free of races) */
	fresh = state_path(jdir, st->key, "journal", path, sizeof(path)) &&
	    lstat(path, &sb) < 0 && errno == ENOENT;
	if ((st->journal_fd = state_file(jdir, st->key, "journal")) < 0)
		return R_SYSTEMP;
	if (fresh)
		sync_dir(jdir);
	st->cache_fd = state_file(st->dir, st->key, "cache");
	return R_SENT;
}

/* Leaves the note in the lock file: for the next session, whether a
 * pseudo-message is hidden now (first, so that a short read finds it);
 * for admins, which account and maildrop it belongs to. */
static void
state_note(const struct state *st, const struct account *acct, int pseudo)
{
	char note[PATH_MAX + 128];
	int n = snprintf(note, sizeof(note), "pseudo=%s\nuser=%s uid=%lu "
	    "maildrop=%s\n", pseudo ? "yes" : "no", acct->name,
	    (unsigned long)acct->uid, acct->mailbox);

	/* written over the old note, then cut: never an empty note, which
	 * would read as a file not seen before */
	if (n < 0 || (size_t)n >= sizeof(note) ||
	    pwrite(st->lock_fd, note, (size_t)n, 0) != n ||
	    ftruncate(st->lock_fd, n) < 0)
		logmsg(LOG_WARNING, "%s: cannot write the state note",
		    acct->mailbox);
}

void
state_close(struct state *st)
{
	int *fds[] = { &st->journal_fd, &st->cache_fd, &st->wait_fd,
	    &st->lock_fd };
	size_t i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

/*
 * Opens the account's maildrop, as a session and --list-uidl do: (root
 * mode) the user's state directory and the privilege drop for good, then
 * as the user the file (checked: a regular file of the user's, one
 * link), its state, the mailbox (completing an interrupted UPDATE), the
 * retirement of a former file's state and the note.  A missing maildrop
 * is an empty one and needs no state.  Returns R_SENT with *mbp set, or
 * the error to answer.
 */
int
maildrop_open(const struct config *cfg, const struct account *acct,
    struct state *st, struct mailbox **mbp)
{
	struct mailbox_opts o;
	int fd, r;

	if (cfg->root && (!priv_servable(acct) ||
	    state_prepare(cfg, acct) < 0 || priv_drop(acct) < 0))
		return R_SYSTEMP;
	if ((r = mailbox_file(acct->mailbox, geteuid(), &fd)) != MB_OK)
		return outcome_mailbox(r);
	if (fd >= 0 && (r = state_lock(cfg, acct, fd, st)) != R_SENT) {
		close(fd);
		return r;
	}
	memset(&o, 0, sizeof(o));
	o.owner = geteuid();
	o.mode = cfg->uidl_mode;
	o.uidl_format = cfg->uidl_format;
	o.lock_timeout = cfg->lock_timeout;
	o.max_messages = cfg->max_messages;
	o.max_bytes = cfg->max_bytes;
	o.journal_fd = st->journal_fd;
	o.cache_fd = st->cache_fd;
	o.pseudo_ok = st->pseudo_ok;
	o.shared = cfg->shared_spool;
	r = mailbox_open_fd(mbp, acct->mailbox, fd, &o);
	if (r != MB_OK)
		return outcome_mailbox(r);
	if (st->lock_fd >= 0) {
		state_retire(st, acct);
		if (st->journal_held)
			mailbox_hold_update(*mbp);
		state_note(st, acct, mailbox_pseudo(*mbp));
	}
	return R_SENT;
}
