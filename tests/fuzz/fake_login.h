/*
 * fake_login.h: what the session fuzz targets share: a fake login ("u"
 * with password "p") onto a fresh copy of a fixture maildrop in a
 * directory of their own (FUZZ_FIXTURE names another fixture).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "pop3d.h"

static char dir[] = "/tmp/pop3d-fuzz-XXXXXX";
static char mbox[PATH_MAX];
static unsigned char *fixture;
static size_t fixture_len;

/* The fake login: "u" with password "p" gets the fixture maildrop. */
int
auth_login(const struct config *cfg, const char *user, char *pass,
    const char *rhost, struct account *acct)
{
	int ok = strcmp(user, "u") == 0 && strcmp(pass, "p") == 0;

	(void)cfg;
	(void)rhost;
	memset(acct, 0, sizeof(*acct));
	explicit_bzero(pass, strlen(pass));
	if (!ok)
		return AUTH_FAIL;
	snprintf(acct->name, sizeof(acct->name), "u");
	snprintf(acct->mailbox, sizeof(acct->mailbox), "%s", mbox);
	acct->uid = getuid();
	acct->gid = getgid();
	return AUTH_OK;
}

int
auth_mailbox_path(const char *tmpl, const struct account *acct, char *buf,
    size_t size)
{
	(void)tmpl;
	(void)acct;
	snprintf(buf, size, "%s", mbox);
	return 0;
}

/* The fixture maildrop, read once; FUZZ_FIXTURE names another one. */
static void
setup(void)
{
	const char *name = getenv("FUZZ_FIXTURE");
	FILE *f = fopen(name ? name : "tests/fixtures/tricky.mbox", "rb");

	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(mbox, sizeof(mbox), "%s/mbox", dir);
	fixture = malloc(1 << 20);
	if (f == NULL || fixture == NULL)
		abort();
	fixture_len = fread(fixture, 1, 1 << 20, f);
	fclose(f);
}

/* The maildrop as the fixture has it, before each run. */
static void
fresh_mailbox(void)
{
	int m;

	if (fixture == NULL)
		setup();
	m = open(mbox, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (m < 0 || write(m, fixture, fixture_len) != (ssize_t)fixture_len)
		abort();
	close(m);
}

