/*
 * mbox.c: libFuzzer target for the mbox side: the input is the maildrop
 * file.  It scans it, sends every message whole and as TOP, and checks
 * that the octets sent, once the dot-stuffing is undone, are what LIST
 * announced; then it deletes one message, runs UPDATE, scans again and
 * checks that exactly the other messages remain, with the same sizes,
 * and that an open through the cache that UPDATE left lists and sends the
 * same; then the same with the first message deleted, through the cache.
 * Before that, two opens through a scan cache (the first writes it, the
 * second uses it) must list what the full scan listed.
 * Built with -DFUZZ_REPLAY it replays the files named on its command line.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io.h"
#include "mailbox.h"

static char dir[] = "/tmp/pop3d-fuzzmb-XXXXXX";
static char path[PATH_MAX];

/* Octets of the dot-stuffed body in fd with the terminator and the
 * stuffing removed; -1 when the terminator is missing. */
static long
unstuffed_length(int fd)
{
	static unsigned char buf[1 << 22];
	ssize_t n;
	size_t i, len = 0;
	int bol = 1;

	if (lseek(fd, 0, SEEK_SET) != 0)
		abort();
	n = read(fd, buf, sizeof(buf));
	if (n == 3 && memcmp(buf, ".\r\n", 3) == 0)
		return 0;
	if (n < 5 || memcmp(buf + n - 5, "\r\n.\r\n", 5) != 0)
		return -1;
	for (i = 0; i < (size_t)n - 3; i++) {
		if (!(bol && buf[i] == '.'))
			len++;
		bol = buf[i] == '\n';
	}
	return (long)len;
}

/* Sends message n whole and as TOP n 1 into a memfd and checks both. */
static void
check_message(struct mailbox *mb, unsigned n)
{
	struct out out;
	int fd = memfd_create("out", 0);
	long got;

	out_init(&out, fd, NULL);
	if (mailbox_check(mb, n) != MB_OK ||
	    mailbox_send(mb, n, -1, &out) != MB_OK || out_flush(&out) < 0)
		abort();
	got = unstuffed_length(fd);
	if (got < 0 || (uint64_t)got != mailbox_size(mb, n)) {
		fprintf(stderr, "message %u: LIST %llu, RETR sent %ld\n", n,
		    (unsigned long long)mailbox_size(mb, n), got);
		abort();
	}
	if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) != 0)
		abort();
	out_init(&out, fd, NULL);
	if (mailbox_send(mb, n, 1, &out) != MB_OK || out_flush(&out) < 0)
		abort();
	got = unstuffed_length(fd);
	if (got < 0 || (uint64_t)got > mailbox_size(mb, n))
		abort();
	close(fd);
}

/* A digest of the listing: count, then size and UIDL of each message. */
static uint64_t
listing(struct mailbox *mb)
{
	char uid[POP3D_UIDL_MAX + 1];
	uint64_t h = 1469598103934665603ULL;
	unsigned i;
	char *c;

	h = (h ^ mailbox_count(mb)) * 1099511628211ULL;
	for (i = 1; i <= mailbox_count(mb); i++) {
		mailbox_uidl(mb, i, uid);
		for (c = uid; *c != '\0'; c++)
			h = (h ^ (unsigned char)*c) * 1099511628211ULL;
		h = (h ^ mailbox_size(mb, i)) * 1099511628211ULL;
	}
	return h;
}

/* Opens path twice through a fresh scan cache: both listings must be
 * the full scan's (want). */
static void
check_cache(const struct mailbox_opts *full, uint64_t want)
{
	struct mailbox_opts o = *full;
	struct mailbox *mb;
	int k;

	if ((o.cache_fd = memfd_create("cache", 0)) < 0)
		abort();
	for (k = 0; k < 2; k++) {
		if (mailbox_open(&mb, path, &o) != MB_OK ||
		    listing(mb) != want)
			abort();
		mailbox_close(mb);
	}
	close(o.cache_fd);
}

/* The maildrop file becomes the input.  Returns 0 on failure. */
static int
write_input(const unsigned char *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int ok = fd >= 0 && (size == 0 || write(fd, data, size) ==
	    (ssize_t)size);

	if (fd >= 0 && close(fd) < 0)
		ok = 0;
	return ok;
}

int	LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static uint64_t sizes[4096];
	char uid[POP3D_UIDL_MAX + 1];
	struct mailbox_opts o = { .owner = getuid(), .mode = UIDL_DIGEST,
	    .lock_timeout = 1, .journal_fd = -1,
	    .cache_fd = -1, .pseudo_ok = 1 };
	struct mailbox_opts oc = o;
	struct mailbox *mb;
	uint64_t want;
	unsigned i, count, del;

	if (path[0] == '\0') {
		if (mkdtemp(dir) == NULL)
			abort();
		snprintf(path, sizeof(path), "%s/mbox", dir);
	}
	if (!write_input(data, size))
		abort();
	if (mailbox_open(&mb, path, &o) != MB_OK)
		return 0;
	count = mailbox_count(mb);
	for (i = 1; i <= count; i++) {
		mailbox_uidl(mb, i, uid);
		if (uid[0] == '\0' || strlen(uid) > POP3D_UIDL_MAX)
			abort();
		check_message(mb, i);
		if (i <= 4096)
			sizes[i - 1] = mailbox_size(mb, i);
	}
	check_cache(&o, listing(mb));
	if (count == 0 || count > 4096) {
		mailbox_close(mb);
		return 0;
	}
	/*
	 * Delete the second message (the first when there is one): the
	 * first stays first, because a message that moves to offset 0 and
	 * carries UW's X-IMAP + FOLDER INTERNAL DATA marks is taken for the
	 * pseudo-message and hidden, as UW imapd and Dovecot take it.
	 */
	del = count >= 2 ? 2 : 1;
	mailbox_close(mb);
	/* the UPDATE session runs with a cache, which it rewrites for the
	 * compacted file: an open through it must list and send what a full
	 * scan does */
	oc.cache_fd = memfd_create("cache", 0);
	if (oc.cache_fd < 0 || mailbox_open(&mb, path, &oc) != MB_OK)
		abort();
	mailbox_delete(mb, del);
	if (mailbox_update(mb) != MB_OK)
		abort();
	mailbox_close(mb);
	if (mailbox_open(&mb, path, &o) != MB_OK ||
	    mailbox_count(mb) != count - 1)
		abort();
	for (i = 1; i < count; i++)
		if (mailbox_size(mb, i) != sizes[i < del ? i - 1 : i])
			abort();
	want = listing(mb);
	mailbox_close(mb);
	if (mailbox_open(&mb, path, &oc) != MB_OK || listing(mb) != want)
		abort();
	for (i = 1; i < count; i++)
		check_message(mb, i);
	mailbox_close(mb);
	/* again from the input, deleting the first message: what starts the
	 * file then may be taken for the pseudo-message by a full scan, and
	 * an open through UPDATE's cache must agree with it */
	if (ftruncate(oc.cache_fd, 0) < 0 || !write_input(data, size) ||
	    mailbox_open(&mb, path, &oc) != MB_OK)
		abort();
	mailbox_delete(mb, 1);
	if (mailbox_update(mb) != MB_OK)
		abort();
	mailbox_close(mb);
	if (mailbox_open(&mb, path, &o) != MB_OK)
		abort();
	want = listing(mb);
	mailbox_close(mb);
	if (mailbox_open(&mb, path, &oc) != MB_OK || listing(mb) != want)
		abort();
	mailbox_close(mb);
	close(oc.cache_fd);
	return 0;
}

#ifdef FUZZ_REPLAY
#include "replay.h"
#endif
