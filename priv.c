/*
 * priv.c: privileges: the drop for good to the user (never gid mail or 0),
 * and the confinement of the pre-auth child and of the TLS process (chroot
 * to the empty directory, an unprivileged user, not dumpable, rlimits, no
 * new privileges, seccomp).
 * Calls: log.c.
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

/* ---- privileges and locks --------------------------------------------- */

/* The gid of group mail, which can write every spool; -1 if none. */
static gid_t
mail_gid(void)
{
	const struct group *mail = getgrnam("mail");

	return mail ? mail->gr_gid : (gid_t)-1;
}

/* May a session run as acct?  Never as uid 0 or with gid 0 or mail.
 * Returns 1, or 0 (logged). */
int
priv_servable(const struct account *acct)
{
	if (acct->uid != 0 && acct->gid != 0 && acct->gid != mail_gid())
		return 1;
	logmsg(LOG_ERR, "refusing to serve uid %lu gid %lu",
	    (unsigned long)acct->uid, (unsigned long)acct->gid);
	return 0;
}

/*
 * Becomes the user of acct for good: supplementary groups without gid
 * mail, then gid, then uid, and checks that root cannot come back.
 * Returns 0, or -1 when the account must not be served.
 */
int
priv_drop(const struct account *acct)
{
	gid_t mailgid = mail_gid();
	long max = sysconf(_SC_NGROUPS_MAX);
	int ng = max > 0 && max < 65536 ? (int)max : 65536, i, k;
	gid_t *groups;

	if (!priv_servable(acct))
		return -1;
	groups = xreallocarray(NULL, (size_t)ng, sizeof(gid_t));
	if (getgrouplist(acct->system_name, acct->gid, groups, &ng) < 0)
		fatalx("too many groups for %s", acct->system_name);
	for (i = k = 0; i < ng; i++)
		if (groups[i] != mailgid && groups[i] != 0)
			groups[k++] = groups[i];
	if (setgroups((size_t)k, groups) < 0 ||
	    setresgid(acct->gid, acct->gid, acct->gid) < 0 ||
	    setresuid(acct->uid, acct->uid, acct->uid) < 0)
		fatal("dropping privileges");
	free(groups);
	if (setuid(0) == 0 || getuid() != acct->uid ||
	    geteuid() != acct->uid || getgid() != acct->gid ||
	    getegid() != acct->gid)
		fatalx("privileges were not dropped");
	return 0;
}

/*
 * The seccomp filter of the pre-auth child and of the TLS process: an
 * allow-list of what reading the client, talking to the parent, relaying
 * and logging need (plus the memory calls of malloc and the sanitizers,
 * getrandom for OpenSSL's reseeding and shutdown for the TLS process's
 * half-close); anything else fails with EPERM rather
 * than killing, so a libc that picks another call for the same job gives
 * an error the child survives.  Only where the audit arch is known.
 */
#if defined(__x86_64__)
#define SECCOMP_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH	AUDIT_ARCH_AARCH64
#endif
/* The AddressSanitizer runtime makes calls of its own in the child
 * (sigaltstack, opening its report file) that no allow-list foresees:
 * sanitizer builds go without the filter; the tests know. */
#if defined(__SANITIZE_ADDRESS__)
#undef SECCOMP_ARCH
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#undef SECCOMP_ARCH
#endif
#endif

#ifdef SECCOMP_ARCH
#define ALLOW(nr) \
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static void
child_seccomp(void)
{
	static const struct sock_filter insns[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
		    offsetof(struct seccomp_data, nr)),
		ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_close),
#ifdef SYS_poll
		ALLOW(SYS_poll),
#endif
		/* sendto: syslog, and send() to a client socket */
		ALLOW(SYS_ppoll), ALLOW(SYS_sendto),
		ALLOW(SYS_exit), ALLOW(SYS_exit_group),
		ALLOW(SYS_rt_sigreturn), ALLOW(SYS_rt_sigprocmask),
		ALLOW(SYS_restart_syscall), ALLOW(SYS_getpid), ALLOW(SYS_gettid),
		ALLOW(SYS_clock_gettime), ALLOW(SYS_clock_nanosleep),
#ifdef SYS_nanosleep
		ALLOW(SYS_nanosleep),
#endif
		ALLOW(SYS_brk), ALLOW(SYS_mmap), ALLOW(SYS_munmap),
		ALLOW(SYS_mremap), ALLOW(SYS_madvise), ALLOW(SYS_futex),
		ALLOW(SYS_getrandom), ALLOW(SYS_shutdown),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & 0xffff)),
	};
	static const struct sock_fprog prog = {
		.len = sizeof(insns) / sizeof(insns[0]),
		.filter = (struct sock_filter *)(uintptr_t)insns,
	};

	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		fatal("seccomp filter");
}
#undef ALLOW
#endif

/*
 * Confines a forked helper: the pre-auth child, or the TLS process once it
 * has loaded its key.  With drop (root mode): chroot to the empty
 * directory and become uid/gid with no supplementary groups.  Always:
 * not dumpable (neither ptrace nor /proc/PID/mem from the same user), no
 * new privileges, no new processes, no core dumps, at most nofile open
 * files, and (where supported) the seccomp allow-list.  The empty root
 * directory is not writable, so no new files either; there is no
 * file-size limit, because stdout may be a file (`pop3d < in > out`).
 */
void
priv_confine(int drop, uid_t uid, gid_t gid, int nofile, const char *who)
{
	struct rlimit zero = { 0, 0 };
	struct rlimit files = { (rlim_t)nofile, (rlim_t)nofile };

	if (drop) {
		if (chroot(POP3D_EMPTY_DIR) < 0 || chdir("/") < 0)
			fatal("chroot %s", POP3D_EMPTY_DIR);
		if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
		    setresuid(uid, uid, uid) < 0)
			fatal("dropping to %s", who);
		if (setuid(0) == 0)
			fatalx("privileges were not dropped");
	}
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fatal("PR_SET_DUMPABLE");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fatal("PR_SET_NO_NEW_PRIVS");
	if (setrlimit(RLIMIT_CORE, &zero) < 0 ||
	    setrlimit(RLIMIT_NPROC, &zero) < 0)
		fatal("setrlimit");
	/* valgrind refuses this one; the seccomp filter covers it there */
	if (setrlimit(RLIMIT_NOFILE, &files) < 0)
		logmsg(LOG_WARNING, "setrlimit RLIMIT_NOFILE: %s",
		    strerror(errno));
#ifdef SECCOMP_ARCH
	child_seccomp();
#endif
}
