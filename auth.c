/*
 * auth.c: checks a login.  Virtual users come from a password file of
 * crypt(3) hashes; system users go through PAM in a short-lived child, so
 * the modules' memory and state die with it.  Both paths cost the same for
 * unknown and known names, and give the caller only ok, fail or temp.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "auth.h"

int
auth_valid_name(const char *user)
{
	size_t i, len = strlen(user);

	if (len == 0 || len > POP3D_USER_MAX || user[0] == '-' ||
	    user[0] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		char c = user[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr("._-@+", c) != NULL))
			return 0;
	}
	return 1;
}

/*
 * Expands %u (login name), %h (home directory) and %% in tmpl.
 * Returns 0, or -1 if the result is too long, not absolute, or the
 * template has an unknown escape.
 */
int
auth_mailbox_path(const char *tmpl, const struct account *acct, char *buf,
    size_t size)
{
	size_t o = 0;
	const char *p;

	for (p = tmpl; *p != '\0'; p++) {
		const char *ins = NULL;
		char one[2] = { *p, '\0' };
		size_t len;

		if (*p == '%') {
			p++;
			if (*p == 'u')
				ins = acct->name;
			else if (*p == 'h')
				ins = acct->home;
			else if (*p == '%')
				ins = "%";
			else
				return -1;
		} else
			ins = one;
		len = strlen(ins);
		if (len >= size - o)
			return -1;
		memcpy(buf + o, ins, len);
		o += len;
	}
	buf[o] = '\0';
	return buf[0] == '/' ? 0 : -1;
}

/* Fills uid, gid, home and the system name of acct from pw. */
static void
account_set_system(struct account *acct, const struct passwd *pw)
{
	acct->uid = pw->pw_uid;
	acct->gid = pw->pw_gid;
	snprintf(acct->home, sizeof(acct->home), "%s", pw->pw_dir);
	snprintf(acct->system_name, sizeof(acct->system_name), "%s",
	    pw->pw_name);
}

/* Compares two strings in time that depends only on the length of b. */
static int
secure_equal(const char *a, const char *b)
{
	size_t i, la = strlen(a), lb = strlen(b);
	unsigned char d = (unsigned char)(la != lb);

	for (i = 0; i < lb; i++)
		d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
	return d == 0;
}

/*
 * Looks user up in the password file.  Returns 1 and fills hash and
 * mailbox when found, 0 when not (hash then holds a dummy setting taken
 * from the file, so an unknown name costs a real crypt), -1 on error.
 */
static int
passwd_lookup(const char *path, const char *user, char *hash, size_t hsize,
    char *mailbox, size_t msize)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int found = 0;

	if (f == NULL) {
		logmsg(LOG_ERR, "cannot open password file %s: %m", path);
		return -1;
	}
	hash[0] = mailbox[0] = '\0';
	while (!found && (n = getline(&line, &cap, f)) > 0) {
		char *name, *h, *mb, *rest = line;

		if (line[n - 1] == '\n')
			line[--n] = '\0';
		if (line[0] == '#' || line[0] == '\0')
			continue;
		name = strsep(&rest, ":");
		h = strsep(&rest, ":");
		mb = strsep(&rest, ":");
		if (h == NULL || h[0] == '\0' || strlen(h) >= hsize)
			continue;
		found = strcmp(name, user) == 0;
		if (found || hash[0] == '\0')
			snprintf(hash, hsize, "%s", h);
		if (found && mb != NULL)
			snprintf(mailbox, msize, "%s", mb);
	}
	if (line != NULL) {
		explicit_bzero(line, cap);
		free(line);
	}
	if (ferror(f)) {
		logmsg(LOG_ERR, "cannot read password file %s", path);
		fclose(f);
		return -1;
	}
	fclose(f);
	return found;
}

/* Checks pass against the password file.  Returns AUTH_OK, AUTH_FAIL,
 * AUTH_TEMP, or 1 when user is not in the file. */
static int
auth_file(const struct config *cfg, const char *user, const char *pass,
    struct account *acct)
{
	static struct crypt_data cd;
	char hash[512], mailbox[PATH_MAX];
	const char *out;
	int found, ok;

	found = passwd_lookup(cfg->passwd_file, user, hash, sizeof(hash),
	    mailbox, sizeof(mailbox));
	if (found < 0)
		return AUTH_TEMP;
	if (hash[0] == '\0')	/* an empty file: nothing to imitate */
		return found ? AUTH_FAIL : 1;
	out = crypt_rn(pass, hash, &cd, sizeof(cd));
	ok = found && out != NULL && out[0] != '*' && secure_equal(out, hash);
	explicit_bzero(&cd, sizeof(cd));
	explicit_bzero(hash, sizeof(hash));
	if (!found)
		return 1;
	if (!ok)
		return AUTH_FAIL;
	snprintf(acct->name, sizeof(acct->name), "%s", user);
	snprintf(acct->mailbox, sizeof(acct->mailbox), "%s", mailbox);
	acct->virtual = 1;
	return AUTH_OK;
}

struct conv_data {
	const char	*user;
	const char	*pass;
};

/* Answers the password and user prompts only. */
static int
pam_conv_fn(int num, const struct pam_message **msg,
    struct pam_response **resp, void *data)
{
	const struct conv_data *cd = data;
	struct pam_response *r;
	int i;

	if (num <= 0 || num > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;
	r = calloc((size_t)num, sizeof(*r));
	if (r == NULL)
		return PAM_BUF_ERR;
	for (i = 0; i < num; i++) {
		const char *ans = NULL;

		if (msg[i]->msg_style == PAM_PROMPT_ECHO_OFF)
			ans = cd->pass;
		else if (msg[i]->msg_style == PAM_PROMPT_ECHO_ON)
			ans = cd->user;
		if (ans != NULL && (r[i].resp = strdup(ans)) == NULL) {
			while (i-- > 0)
				if (r[i].resp != NULL) {
					explicit_bzero(r[i].resp,
					    strlen(r[i].resp));
					free(r[i].resp);
				}
			free(r);
			return PAM_BUF_ERR;
		}
	}
	*resp = r;
	return PAM_SUCCESS;
}

/* PAM's own failure delays (pam_unix, pam_faildelay) would differ by
 * path; pop3d alone decides the delay, after every kind of failure. */
static void
pam_no_delay(int status, unsigned delay, void *data)
{
	(void)status;
	(void)delay;
	(void)data;
}

/* The PAM child: authenticates, checks the account, and writes the PAM
 * status and the final PAM_USER to fd.  Never returns. */
static void __attribute__((noreturn))
pam_child(const struct config *cfg, const char *user, const char *pass,
    const char *rhost, int fd)
{
	struct conv_data cd = { user, pass };
	struct pam_conv conv = { pam_conv_fn, &cd };
	pam_handle_t *h = NULL;
	const void *item = NULL;
	char reply[1 + POP3D_USER_MAX + 1];
	int r;

	memset(reply, 0, sizeof(reply));
	r = pam_start(cfg->pam_service, user, &conv, &h);
	if (r == PAM_SUCCESS && rhost != NULL)
		r = pam_set_item(h, PAM_RHOST, rhost);
	if (r == PAM_SUCCESS)
		r = pam_set_item(h, PAM_FAIL_DELAY,
		    (const void *)(uintptr_t)pam_no_delay);
	if (r == PAM_SUCCESS)
		r = pam_authenticate(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (r == PAM_SUCCESS)
		r = pam_acct_mgmt(h, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
	if (r == PAM_SUCCESS)
		r = pam_get_item(h, PAM_USER, &item);
	if (r == PAM_SUCCESS && (item == NULL ||
	    strlen(item) > POP3D_USER_MAX))
		r = PAM_USER_UNKNOWN;
	if (r == PAM_SUCCESS) {
		reply[0] = 'Y';
		memcpy(reply + 1, item, strlen(item));
	} else {
		reply[0] = 'N';
		if (h != NULL)
			logmsg(LOG_NOTICE, "pam: %s", pam_strerror(h, r));
	}
	if (h != NULL)
		pam_end(h, r);
	if (write(fd, reply, sizeof(reply)) != (ssize_t)sizeof(reply))
		_exit(1);
	_exit(0);
}

/*
 * Runs PAM in a child.  Returns AUTH_OK with the canonical name in
 * canon, AUTH_FAIL, or AUTH_TEMP when the child failed.
 */
static int
auth_pam(const struct config *cfg, const char *user, const char *pass,
    const char *rhost, char canon[POP3D_USER_MAX + 1])
{
	char reply[1 + POP3D_USER_MAX + 1];
	int fds[2], status;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return AUTH_TEMP;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return AUTH_TEMP;
	}
	if (pid == 0) {
		close(fds[0]);
		pam_child(cfg, user, pass, rhost, fds[1]);
	}
	close(fds[1]);
	do
		n = read(fds[0], reply, sizeof(reply));
	while (n < 0 && errno == EINTR);
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (n != (ssize_t)sizeof(reply) || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		logmsg(LOG_ERR, "PAM child failed");
		return AUTH_TEMP;
	}
	reply[sizeof(reply) - 1] = '\0';
	if (reply[0] != 'Y')
		return AUTH_FAIL;
	snprintf(canon, POP3D_USER_MAX + 1, "%s", reply + 1);
	return AUTH_OK;
}

/* Fills the system side of a virtual account.  Returns AUTH_OK or
 * AUTH_TEMP (misconfiguration). */
static int
virtual_system_user(const struct config *cfg, struct account *acct)
{
	struct passwd *pw;

	if (cfg->root) {
		if (cfg->virtual_user == NULL) {
			logmsg(LOG_ERR, "password-file login needs "
			    "--virtual-user when run as root");
			return AUTH_TEMP;
		}
		pw = getpwnam(cfg->virtual_user);
	} else
		pw = getpwuid(getuid());
	if (pw == NULL) {
		logmsg(LOG_ERR, "no system user for virtual users");
		return AUTH_TEMP;
	}
	account_set_system(acct, pw);
	return AUTH_OK;
}

int
auth_login(const struct config *cfg, const char *user, char *pass,
    const char *rhost, struct account *acct)
{
	char canon[POP3D_USER_MAX + 1];
	struct passwd *pw;
	int r = 1;

	memset(acct, 0, sizeof(*acct));
	if (!auth_valid_name(user) || strlen(pass) > POP3D_PASS_MAX) {
		/* same cost as a real check, so the reply time tells nothing */
		if (cfg->passwd_file != NULL)
			(void)auth_file(cfg, "", "", acct);
		r = AUTH_FAIL;
		goto done;
	}
	if (cfg->passwd_file != NULL)
		r = auth_file(cfg, user, pass, acct);
	if (r == AUTH_OK)
		r = virtual_system_user(cfg, acct);
	if (r != 1)
		goto done;
	r = auth_pam(cfg, user, pass, rhost, canon);
	if (r != AUTH_OK)
		goto done;
	if ((pw = getpwnam(canon)) == NULL ||
	    (!cfg->root && pw->pw_uid != getuid())) {
		r = AUTH_FAIL;
		goto done;
	}
	snprintf(acct->name, sizeof(acct->name), "%s", canon);
	account_set_system(acct, pw);
done:
	explicit_bzero(pass, strlen(pass));
	if (r == AUTH_OK && acct->mailbox[0] == '\0' &&
	    auth_mailbox_path(cfg->mailbox, acct, acct->mailbox,
	    sizeof(acct->mailbox)) < 0) {
		logmsg(LOG_ERR, "mailbox template gives no absolute path");
		r = AUTH_TEMP;
	}
	return r;
}
