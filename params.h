/*
 * params.h: every limit and default of pop3d, each with its reason, and
 * nothing else (popa3d's params.h is the model).
 */
#ifndef PARAMS_H
#define PARAMS_H

#define POP3D_VERSION		"0.1"

/* RFC 2449 section 4: a command line is at most 255 octets with its CRLF. */
#define POP3D_LINE_MAX		255
/* RFC 5034 lifts the 255 limit for SASL continuation lines; base64 of
 * authzid NUL authcid NUL password, each at most 255 octets, fits here. */
#define POP3D_SASL_LINE_MAX	1100
/* Longest login name we accept; system and virtual names are far shorter. */
#define POP3D_USER_MAX		64
/* Longest password we pass on; longer ones are refused like wrong ones. */
#define POP3D_PASS_MAX		255
/* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21..0x7E. */
#define POP3D_UIDL_MAX		70
/* --uidl x-uid ids by default: Dovecot's default pop3_uidl_format (its X
 * gives lowercase hex), so Dovecot sites that kept it need no option. */
#define POP3D_UIDL_FORMAT	"%08Xu%08Xv"
/* Failed logins before the session ends (DESIGN 4). */
#define POP3D_MAX_FAILS		3
/* Bad commands before the session ends: a confused or hostile client. */
#define POP3D_MAX_BAD		20
/* RFC 1939 section 3: an autologout timer must be at least 10 minutes. */
#define POP3D_IDLE_TIMEOUT	600
/* Before login nothing needs ten minutes; free the slot sooner.  One
 * budget from the connect for the whole AUTHORIZATION state, reading and
 * writing (--auth-timeout). */
#define POP3D_AUTH_TIMEOUT	60
/* Seconds the root parent waits for its pre-auth child beyond that budget
 * before it kills the child: one that is on time has ended itself by then,
 * with its reply to the client; one that is stuck does not keep the
 * parent.  Also what the parent allows for each record when its own PAM
 * check used up the budget. */
#define POP3D_AUTH_GRACE	5
/* Delay after a failed login, in milliseconds: slows password guessing. */
#define POP3D_FAIL_DELAY_MS	1000
/* Total wait for the mailbox locks before [SYS/TEMP], in seconds; a
 * delivery holds them for well under a second. */
#define POP3D_LOCK_TIMEOUT	20
/* Back-off between two lock attempts, random in this range (ms). */
#define POP3D_LOCK_BACKOFF_MIN	5
#define POP3D_LOCK_BACKOFF_MAX	100
/* Read and write block for the mailbox: large enough to stream at memory
 * speed, small enough to keep the session process tiny. */
#define POP3D_BLOCK		65536
/* Output buffer towards the client. */
#define POP3D_OUTBUF		16384
/* Input buffer from the client: several pipelined command lines. */
#define POP3D_INBUF		4096

/* Octets of a line kept to classify it (From_ line, header name, the
 * values of X-UIDL/X-UID/X-IMAP/Subject); longer lines still stream. */
#define MBOX_HEAD_MAX		1024
/* A From_ line longer than that (a long envelope sender) is judged by the
 * date in its last octets: a date with zones and "remote from HOST" fits
 * in this many. */
#define MBOX_FROM_TAIL		256
/* Default cap on the messages one session serves (--max-messages): 64
 * octets of struct msg each, so at most about 64 MB (128 MB while the
 * array doubles); the rest of a bigger maildrop waits for a later session. */
#define MBOX_MAX_MESSAGES	1000000U
/* Highest --max-messages: keeps the array under 2 GB. */
#define MBOX_MAX_MESSAGES_OPT	(1U << 24)
/* Octets at the end of the scanned file whose digest is kept: appended
 * mail must leave them alone. */
#define MBOX_TAIL_MAX		4096
/* Messages whose fingerprints a scan cache must match (first and last
 * included): a few preads, and a rewrite in place shows in some of them. */
#define MBOX_CACHE_SPOT		8
/* Longest wait (ms) after a scan for the clock to pass the mtime, so that
 * any later write changes the mtime (1-second filesystems need it). */
#define MBOX_SETTLE_MS		1100
/* The same after UPDATE, for the scan cache only: if the clock takes
 * longer to pass the new mtime, the cache is not written. */
#define MBOX_SETTLE_QUIT_MS	20

/* Octets of output per write at UPDATE, and the largest journal data
 * record: few system calls, and a session process that stays small.
 * (Both can be set with -D for tests/powerloss-4k, whose small mailboxes
 * then take many chunks and records.) */
#ifndef MBOX_UPDATE_CHUNK
#define MBOX_UPDATE_CHUNK	(4U << 20)
#endif
/* Smallest journal record slot: a recovery that also moves mail delivered
 * after the crash may need bigger records than the interrupted update. */
#ifndef MBOX_SLOT_MIN
#define MBOX_SLOT_MIN		(256U << 10)
#endif

/* Defaults that an option can change. */
#define POP3D_MAILBOX		"/var/mail/%u"
#define POP3D_PAM_SERVICE	"pop3d"
/* Unprivileged user for the pre-authentication child. */
#define POP3D_USER		"pop3d"
/* Open files of the pre-authentication child: no new descriptor at all
 * (poll() needs the limit to be at least the number of fds it watches). */
#define POP3D_CHILD_NOFILE	1
/* Empty directory the pre-authentication child is chrooted to. */
#define POP3D_EMPTY_DIR		"/var/lib/pop3d/empty"
/* Unprivileged user of the TLS process (--tls-user): not the pre-auth
 * child's, so that a compromised parser can neither ptrace nor signal the
 * process that holds the private key. */
#define POP3D_TLS_USER		"pop3d-tls"
/* Open files of the TLS process: no new descriptor, but poll() on its three
 * (network in, network out, the plaintext socketpair) needs the limit at 3. */
#define POP3D_TLS_NOFILE	3
/* Octets of ciphertext the TLS process holds for a client that reads
 * slowly before it stops taking plaintext from the session (it may hold
 * up to one POP3D_TLS_CHUNK more): the session's own write limits then
 * apply, as without TLS. */
#define POP3D_TLS_BUFFER	(256U << 10)
/* Octets the TLS process reads from the session at once, and the most it
 * sends of ciphertext at once: the session writes POP3D_OUTBUF at a time,
 * several of which wait in the socketpair during a RETR, and each system
 * call costs far more than the copy of 16 KiB (bench/RESULTS.md, "TLS
 * performance"). */
#define POP3D_TLS_CHUNK		(256U << 10)
/* Send buffer of the session's end of the plaintext socketpair (Linux
 * 212992 by default): the session runs ahead of the TLS process by this
 * much, so that the two wake each other a third as often during a RETR
 * (bench/RESULTS.md, "TLS performance"). */
#define POP3D_TLS_SOCKBUF	(1 << 20)
/* Seconds the TLS process waits for each progress of the client taking
 * the last replies after the session has ended: one that reads is done in
 * well under that; one that stopped reading is not waited for. */
#define POP3D_TLS_LINGER	5
/* Where root mode keeps the per-maildrop session locks and UPDATE
 * journals: on disk, since a journal must outlive a power cut. */
#define POP3D_STATE_DIR		"/var/lib/pop3d/state"

/* PROXY protocol (proxy.c).  Octets of one header at most: v1 lines are at
 * most 107; a v2 header is 16 + an address block (216 for AF_UNIX) + TLVs,
 * which senders keep within one TCP segment (536); HAProxy's SSL, ALPN,
 * AUTHORITY and 128-octet UNIQUE_ID TLVs together stay far below this. */
#define POP3D_PROXY_MAX		1024
/* Seconds a trusted proxy has to send its header, within --auth-timeout:
 * it sends it at once on connecting; the spec asks receivers to allow at
 * least 3 s for a TCP retransmit. */
#define POP3D_PROXY_TIMEOUT	10
/* Entries of --proxy-from: a few proxies or networks. */
#define POP3D_PROXY_FROM_MAX	32

#endif
