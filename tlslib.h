/*
 * tlslib.h: OpenSSL for the TLS process alone (tlslib.c).  pop3d is not
 * linked with libssl: the TLS process loads it with dlopen() before it
 * confines itself, and calls it through the read-only table ossl, so that
 * a session without TLS, the root parent and the pre-auth child never map
 * it (a plaintext session spends nothing on OpenSSL).
 */
#ifndef TLSLIB_H
#define TLSLIB_H

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

/* Every OpenSSL function tls.c calls; the macros of the headers that stand
 * for calls (SSL_CTX_set_min_proto_version and the like) are written as
 * the calls they stand for, since the names themselves are not linked. */
#define TLSLIB_FUNCS(X) \
	X(OPENSSL_init_ssl) X(TLS_server_method) X(SSL_CTX_new) \
	X(SSL_CTX_free) X(SSL_CTX_ctrl) X(SSL_CTX_set_options) \
	X(SSL_CTX_set_num_tickets) X(SSL_CTX_use_certificate_chain_file) \
	X(SSL_CTX_use_PrivateKey_file) X(SSL_CTX_check_private_key) \
	X(SSL_new) X(SSL_free) X(SSL_set_bio) X(SSL_set_accept_state) \
	X(SSL_do_handshake) X(SSL_get_error) X(SSL_read) X(SSL_write) \
	X(SSL_shutdown) X(SSL_get_version) X(SSL_get_current_cipher) \
	X(SSL_CIPHER_get_name) X(BIO_new) X(BIO_s_mem) X(BIO_read) \
	X(BIO_write) X(BIO_ctrl_pending) X(RAND_bytes) X(ERR_get_error) \
	X(ERR_error_string_n) X(ERR_clear_error)

/* Each member has the type of the function it names (from the headers). */
struct tlslib {
#define TLSLIB_MEMBER(f) __typeof__(f) *f;
	TLSLIB_FUNCS(TLSLIB_MEMBER)
#undef TLSLIB_MEMBER
};

/* The table, once tlslib_load() has filled it; NULL before. */
extern const struct tlslib *ossl;

/* Loads libssl (and with it libcrypto) and fills ossl, which is then made
 * read-only.  Returns 0, or -1 (logged). */
int	tlslib_load(void);

#endif
