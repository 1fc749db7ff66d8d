/*
 * pop3d.c: main() and its option parsing (config_parse), --list-uidl, and
 * pop3d_session(), the entry of one session on an input and an output fd.
 *
 * Root mode: root.c runs the pre-auth child and the parent's login loop,
 * then the session goes on as the user.  User mode: the states in one
 * process, with no privilege changes (session.c).  With TLS, the TLS
 * process (tls.c) sits between the client and either.
 * Calls: root.c, session.c, tls.c, conn.c (who the client is: the peer or
 * a trusted proxy's PROXY header), state.c (maildrop_open for
 * --list-uidl), mailbox.c, auth.c (the mailbox template), log.c.
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

#include "conn.h"
#include "root.h"
#include "session.h"
#include "state.h"

/* User mode, from a trusted proxy: its header, read and parsed here (no
 * privilege to protect).  Returns 0, or -1 when there is no session. */
static int
user_proxy(struct session *s)
{
	struct proxy_hdr h;

	if (conn_proxy_read(s, &h) < 0 || conn_proxy_accept(s, &h) < 0)
		return -1;
	conn_log(s);
	return 0;
}

/*
 * Serves one whole session on infd/outfd: root mode with the pre-auth
 * child when cfg->root, else user mode.  rhost is the peer or NULL.
 * Returns the exit status.
 */
int
pop3d_session(const struct config *cfg, int infd, int outfd, const char *rhost)
{
	static struct session sess;	/* one per process; no leak at _exit */
	struct session *s = &sess;
	int status = 0;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->rhost = rhost;
	s->proxied = conn_trusted(cfg, rhost);
	s->priv_fd = -1;
	s->how = END_NONE;
	s->st.lock_fd = s->st.journal_fd = s->st.cache_fd = s->st.wait_fd = -1;
	s->state = ST_AUTH;
	tls_init(&s->tls);
	session_limit(s, io_now());
	in_init(&s->in, infd, &s->limit);
	out_init(&s->out, outfd, &s->limit);
	conn_start(s);
	if (cfg->root)
		status = root_run(s);
	else if (cfg->tls_implicit && (s->tls.proxy = s->proxied,
	    tls_start(&s->tls, cfg, infd, outfd, s->limit.end, rhost)) < 0)
		status = 1;
	else {
		if (cfg->tls_implicit)
			session_use_tls(s);
		/* with implicit TLS the TLS process passes the header on
		 * ahead of the decrypted stream */
		if (!s->proxied || user_proxy(s) == 0) {
			out_str(&s->out, "+OK pop3d ready.\r\n");
			session_loop(s);
		}
	}
	out_flush(&s->out);
	tls_finish(&s->tls);	/* the client has all before the summary */
	if (status == 0)
		session_log_summary(s);
	if (s->mb != NULL)
		mailbox_close(s->mb);
	state_close(&s->st);
	explicit_bzero(s, sizeof(*s));
	return status;
}

#ifndef POP3D_NO_MAIN

/* --list-uidl USER: prints the unique-id listing of a maildrop. */
static int
list_uidl(const struct config *cfg, const char *user)
{
	char uid[POP3D_UIDL_MAX + 1];
	struct account acct;
	struct mailbox *mb;
	struct passwd *pw = getpwnam(user);
	struct state st;
	unsigned i;
	int r;

	memset(&acct, 0, sizeof(acct));
	memset(&st, 0, sizeof(st));
	st.lock_fd = st.journal_fd = st.cache_fd = st.wait_fd = -1;
	if (pw == NULL || (!cfg->root && pw->pw_uid != getuid())) {
		fprintf(stderr, "pop3d: %s: no such user, or not you\n", user);
		return 1;
	}
	snprintf(acct.name, sizeof(acct.name), "%s", pw->pw_name);
	snprintf(acct.system_name, sizeof(acct.system_name), "%s",
	    pw->pw_name);
	snprintf(acct.home, sizeof(acct.home), "%s", pw->pw_dir);
	acct.uid = pw->pw_uid;
	acct.gid = pw->pw_gid;
	if (auth_mailbox_path(cfg->mailbox, &acct, acct.mailbox,
	    sizeof(acct.mailbox)) < 0) {
		fprintf(stderr, "pop3d: bad mailbox template\n");
		return 1;
	}
	/* as a session would: a pending UPDATE is completed first */
	if ((r = maildrop_open(cfg, &acct, &st, &mb)) != R_SENT) {
		fprintf(stderr, "pop3d: %s: %s\n", acct.mailbox,
		    outcome_text(r));
		state_close(&st);
		return 1;
	}
	for (i = 1; i <= mailbox_count(mb); i++) {
		mailbox_uidl(mb, i, uid);
		printf("%u %s\n", i, uid);
	}
	mailbox_close(mb);
	state_close(&st);
	return fflush(stdout) == 0 ? 0 : 1;
}


static void __attribute__((noreturn))
usage(int status)
{
	fprintf(status ? stderr : stdout,
"usage: pop3d [options]\n"
"  --mailbox TEMPLATE     maildrop path, %%u user, %%h home (default %s)\n"
"  --passwd-file FILE     virtual users: lines user:crypt-hash[:mailbox]\n"
"  --virtual-user USER    system user that virtual users run as (root mode)\n"
"  --pam-service NAME     PAM service name (default %s)\n"
"  --state-dir DIR        session locks, journals, scan caches (default %s as root)\n"
"  --auth-timeout SECONDS time from connect to login, all of it (default %d)\n"
"  --idle-timeout SECONDS autologout after login (default %d; RFC 1939: >= 600)\n"
"  --lock-timeout SECONDS longest wait for the mailbox locks (default %d)\n"
"  --fail-delay MS        delay after a failed login (default %d)\n"
"  --uidl MODE            digest, x-uidl or x-uid (default digest)\n"
"  --uidl-format TEMPLATE x-uid ids as Dovecot's pop3_uidl_format: %%u, %%v\n"
"                         (default %s)\n"
"  --max-messages N       serve at most the first N messages (default %u)\n"
"  --max-bytes N          serve at most N octets, whole messages (default 0:\n"
"                         no limit); the rest waits for a later session\n"
"  --tls-cert FILE        PEM certificate chain: offers STLS, or with\n"
"                         --tls-implicit TLS from the first octet\n"
"  --tls-key FILE         PEM private key, read only by the TLS process\n"
"  --tls-implicit         TLS from the first octet (pop3s, port 995)\n"
"  --tls-user USER        the TLS process's user in root mode (default %s)\n"
"  --allow-plaintext-auth with TLS, still allow logins before STLS\n"
"  --proxy-from LIST      trusted proxies (addresses, ADDRESS/BITS, comma-\n"
"                         separated): their connections start with a PROXY\n"
"                         protocol header naming the client\n"
"  --shared-spool         spool and --state-dir are shared by several hosts\n"
"                         (NFS): state named by the maildrop's inode alone\n"
"  --list-uidl USER       print the UIDL listing of USER's maildrop, exit\n"
"  -d, --debug            log to stderr instead of syslog\n"
"  -V, --version          print the version and exit\n"
"  -h, --help             print this help and exit\n",
	    POP3D_MAILBOX, POP3D_PAM_SERVICE, POP3D_STATE_DIR,
	    POP3D_AUTH_TIMEOUT, POP3D_IDLE_TIMEOUT, POP3D_LOCK_TIMEOUT,
	    POP3D_FAIL_DELAY_MS, POP3D_UIDL_FORMAT, MBOX_MAX_MESSAGES,
	    POP3D_TLS_USER);
	exit(status);
}

/* Parses a numeric option value in [lo, hi] or exits with usage. */
static int
option_number(const char *name, const char *arg, unsigned long lo,
    unsigned long hi)
{
	unsigned long v;

	if (parse_number(arg, hi, &v) < 0 || v < lo) {
		fprintf(stderr, "pop3d: --%s: want a number from %lu to %lu\n",
		    name, lo, hi);
		usage(2);
	}
	return (int)v;
}

/*
 * Sets *cfg from the defaults and the command line; *list_user to the
 * --list-uidl user (or NULL).  --version and --help exit with 0, a bad
 * option with usage() and 2.
 */
static void
config_parse(struct config *cfg, const char **list_user, int argc,
    char **argv)
{
	static const struct option longopts[] = {
		{ "mailbox",	  required_argument, NULL, 'm' },
		{ "passwd-file",  required_argument, NULL, 'P' },
		{ "virtual-user", required_argument, NULL, 'U' },
		{ "pam-service",  required_argument, NULL, 's' },
		{ "state-dir",	  required_argument, NULL, 'S' },
		{ "auth-timeout", required_argument, NULL, 'a' },
		{ "idle-timeout", required_argument, NULL, 't' },
		{ "lock-timeout", required_argument, NULL, 'l' },
		{ "fail-delay",	  required_argument, NULL, 'f' },
		{ "uidl",	  required_argument, NULL, 'i' },
		{ "uidl-format",  required_argument, NULL, 'X' },
		{ "max-messages", required_argument, NULL, 'M' },
		{ "max-bytes",	  required_argument, NULL, 'B' },
		{ "tls-cert",	  required_argument, NULL, 'c' },
		{ "tls-key",	  required_argument, NULL, 'k' },
		{ "tls-implicit", no_argument,	     NULL, 'I' },
		{ "tls-user",	  required_argument, NULL, 'T' },
		{ "allow-plaintext-auth", no_argument, NULL, 'A' },
		{ "proxy-from",	  required_argument, NULL, 'p' },
		{ "shared-spool", no_argument,	     NULL, 'H' },
		{ "list-uidl",	  required_argument, NULL, 'u' },
		{ "debug",	  no_argument,	     NULL, 'd' },
		{ "version",	  no_argument,	     NULL, 'V' },
		{ "help",	  no_argument,	     NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	static const struct config defaults = {
		.mailbox = POP3D_MAILBOX,
		.pam_service = POP3D_PAM_SERVICE,
		.auth_timeout = POP3D_AUTH_TIMEOUT,
		.idle_timeout = POP3D_IDLE_TIMEOUT,
		.lock_timeout = POP3D_LOCK_TIMEOUT,
		.fail_delay_ms = POP3D_FAIL_DELAY_MS,
		.uidl_mode = UIDL_DIGEST,
	};
	static struct proxy_net nets[POP3D_PROXY_FROM_MAX];
	unsigned long bytes;
	const char *why;
	int c, n;

	*cfg = defaults;
	*list_user = NULL;
	while ((c = getopt_long(argc, argv, "dVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': cfg->mailbox = optarg; break;
		case 'P': cfg->passwd_file = optarg; break;
		case 'U': cfg->virtual_user = optarg; break;
		case 's': cfg->pam_service = optarg; break;
		case 'S': cfg->state_dir = optarg; break;
		case 'a':
			cfg->auth_timeout = option_number("auth-timeout",
			    optarg, 1, 3600);
			break;
		case 't':
			cfg->idle_timeout = option_number("idle-timeout",
			    optarg, 1, 86400);
			break;
		case 'l':
			cfg->lock_timeout = option_number("lock-timeout",
			    optarg, 1, 3600);
			break;
		case 'f':
			cfg->fail_delay_ms = option_number("fail-delay",
			    optarg, 0, 60000);
			break;
		case 'i':
			if (strcmp(optarg, "digest") == 0)
				cfg->uidl_mode = UIDL_DIGEST;
			else if (strcmp(optarg, "x-uidl") == 0)
				cfg->uidl_mode = UIDL_XUIDL;
			else if (strcmp(optarg, "x-uid") == 0)
				cfg->uidl_mode = UIDL_XUID;
			else {
				fprintf(stderr, "pop3d: --uidl: digest, "
				    "x-uidl or x-uid\n");
				usage(2);
			}
			break;
		case 'X':
			if (mailbox_uidl_format_check(optarg) < 0) {
				fprintf(stderr, "pop3d: --uidl-format: %%u, "
				    "%%v with 0, a width, X, U or L, %%%%, "
				    "printable characters; at most %d in "
				    "all\n", POP3D_UIDL_MAX);
				usage(2);
			}
			cfg->uidl_format = optarg;
			break;
		case 'M':
			cfg->max_messages = (unsigned)option_number(
			    "max-messages", optarg, 1, MBOX_MAX_MESSAGES_OPT);
			break;
		case 'B':
			if (parse_number(optarg, ULONG_MAX, &bytes) < 0) {
				fprintf(stderr, "pop3d: --max-bytes: want a "
				    "number (0: no limit)\n");
				usage(2);
			}
			cfg->max_bytes = bytes;
			break;
		case 'c': cfg->tls_cert = optarg; break;
		case 'k': cfg->tls_key = optarg; break;
		case 'I': cfg->tls_implicit = 1; break;
		case 'T': cfg->tls_user = optarg; break;
		case 'A': cfg->allow_plaintext_auth = 1; break;
		case 'p':
			if ((n = proxy_list_parse(optarg, nets,
			    POP3D_PROXY_FROM_MAX, &why)) < 0) {
				fprintf(stderr, "pop3d: --proxy-from: %s\n", why);
				usage(2);
			}
			cfg->proxy_from = nets;
			cfg->proxy_n = (size_t)n;
			break;
		case 'H': cfg->shared_spool = 1; break;
		case 'u': *list_user = optarg; break;
		case 'd': cfg->debug = 1; break;
		case 'V':
			printf("pop3d %s\n", POP3D_VERSION);
			exit(0);
		case 'h': usage(0);
		default: usage(2);
		}
	}
	if (optind != argc)
		usage(2);
	if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
		fprintf(stderr, "pop3d: --tls-cert and --tls-key go together\n");
		usage(2);
	}
	if ((cfg->tls_implicit || cfg->tls_user != NULL) &&
	    cfg->tls_cert == NULL) {
		fprintf(stderr, "pop3d: --tls-implicit and --tls-user need "
		    "--tls-cert and --tls-key\n");
		usage(2);
	}
	if (cfg->uidl_format != NULL && cfg->uidl_mode != UIDL_XUID) {
		fprintf(stderr, "pop3d: --uidl-format needs --uidl x-uid\n");
		usage(2);
	}
}

int
main(int argc, char **argv)
{
	struct config cfg;
	const char *list_user = NULL, *rhost = NULL;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct rlimit rl = { 0, 0 };
	char host[NI_MAXHOST];

	config_parse(&cfg, &list_user, argc, argv);
	if (geteuid() == 0 && getuid() != 0) {
		fprintf(stderr, "pop3d: must not be installed setuid\n");
		return 2;
	}
	cfg.root = getuid() == 0;
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	(void)setrlimit(RLIMIT_CORE, &rl);
	log_init(cfg.debug);
	if (list_user != NULL)
		return list_uidl(&cfg, list_user);

	if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &sslen) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sslen, host, sizeof(host),
	    NULL, 0, NI_NUMERICHOST) == 0)
		rhost = host;
	return pop3d_session(&cfg, STDIN_FILENO, STDOUT_FILENO, rhost);
}

#endif /* POP3D_NO_MAIN */
