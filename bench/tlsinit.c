/*
 * bench/tlsinit.c: what a process that starts once per connection pays
 * for OpenSSL before its first handshake, step by step, as pop3d's TLS
 * process does it: library initialisation, a server context, the
 * certificate chain and the private key read from their files.  Prints
 * the microseconds of each step on one line; bench/tlsbench.py runs it as
 * a fresh process many times and takes medians.  The cost of loading the
 * shared libraries is measured by the caller (spawn of this program
 * against spawn of /bin/true).
 *
 *   tlsinit CERTFILE KEYFILE
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <time.h>

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	double t0, t1, t2, t3, t4;
	SSL_CTX *ctx;

	if (argc != 3) {
		fprintf(stderr, "usage: tlsinit CERTFILE KEYFILE\n");
		return 2;
	}
	t0 = now_us();
	if (!OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL))
		return 1;
	t1 = now_us();
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return 1;
	t2 = now_us();
	if (SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1)
		return 1;
	t3 = now_us();
	if (SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		return 1;
	t4 = now_us();
	printf("init=%.0f ctx=%.0f cert=%.0f key=%.0f\n", t1 - t0, t2 - t1,
	    t3 - t2, t4 - t3);
	SSL_CTX_free(ctx);
	return 0;
}
