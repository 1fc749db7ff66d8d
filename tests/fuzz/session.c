/*
 * session.c: libFuzzer target for the whole session input: the line
 * reader, the dispatcher, every command, AUTH PLAIN and UPDATE, in user
 * mode, with a fake login ("u"/"p") onto a fresh copy of a fixture
 * maildrop.  Built with -DFUZZ_REPLAY it runs the files named on its
 * command line instead, so `make check` replays the committed corpus.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_login.h"

int	LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct config cfg = {
		.mailbox = "/nonexistent/%u",
		.pam_service = "pop3d-fuzz",
		.auth_timeout = 3600,	/* never ends a run: same input, same path */
		.idle_timeout = 1,
		.lock_timeout = 1,
		.fail_delay_ms = 0,
	};
	int in, out;

	fresh_mailbox();
	cfg.state_dir = dir;
	in = memfd_create("in", 0);
	out = open("/dev/null", O_WRONLY);
	if (in < 0 || out < 0 ||
	    (size && write(in, data, size) != (ssize_t)size) ||
	    lseek(in, 0, SEEK_SET) != 0)
		abort();
	pop3d_session(&cfg, in, out, NULL);
	close(in);
	close(out);
	return 0;
}

#ifdef FUZZ_REPLAY
#include "replay.h"
#endif
