/*
 * tlslib.c: loads OpenSSL into the TLS process (tlslib.h says why).
 *
 * Measured (bench/RESULTS.md, "TLS performance"): a process linked with
 * libssl and libcrypto pays 3.5 ms more per exec than without them on the
 * test VM at rest, 7.5 ms under load (loading, relocating, constructors),
 * in every connection, with TLS or not.  Loaded here, only the TLS
 * process pays it, once, where it would have paid it anyway.
 *
 * Safety: the library is found as the dynamic linker found it when pop3d
 * was linked with it (the same name, search path and environment), and it
 * is loaded as root before the chroot and the drop, like a linked library.
 * libssl and libcrypto are built with full RELRO of their own; the table
 * of pointers into them, which takes the place of pop3d's read-only GOT
 * entries, lives in a page of its own that is made read-only once filled.
 * Calls: log.c.
 */
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <syslog.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "tlslib.h"

#define TLSLIB_STR(x)	#x
#define TLSLIB_XSTR(x)	TLSLIB_STR(x)
/* The soname of the library the headers describe: libssl.so.3. */
#define TLSLIB_SONAME	"libssl.so." TLSLIB_XSTR(OPENSSL_SHLIB_VERSION)

const struct tlslib *ossl;

/* dlsym() gives a void *, stored into function pointers (POSIX). */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)),
    "function pointers are not the size of void *");

/* Looks each function up in h (libssl and what it depends on, libcrypto)
 * into t.  Returns 0, or -1 (logged). */
static int
lookup(void *h, struct tlslib *t)
{
	void *p;

#define TLSLIB_LOOKUP(f)						\
	if ((p = dlsym(h, #f)) == NULL) {				\
		logmsg(LOG_ERR, "TLS: %s has no %s", TLSLIB_SONAME, #f); \
		return -1;						\
	}								\
	memcpy(&t->f, &p, sizeof(p));
	TLSLIB_FUNCS(TLSLIB_LOOKUP)
#undef TLSLIB_LOOKUP
	return 0;
}

int
tlslib_load(void)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t size = page > 0 && (size_t)page > sizeof(struct tlslib) ?
	    (size_t)page : sizeof(struct tlslib);
	struct tlslib *t;
	void *h;

	if (ossl != NULL)
		return 0;
	if ((h = dlopen(TLSLIB_SONAME, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		logmsg(LOG_ERR, "TLS: cannot load %s: %s", TLSLIB_SONAME,
		    dlerror());
		return -1;
	}
	t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE |
	    MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED) {
		logmsg(LOG_ERR, "TLS: mmap: %s", strerror(errno));
		return -1;
	}
	if (lookup(h, t) < 0)
		return -1;
	if (mprotect(t, size, PROT_READ) < 0) {
		logmsg(LOG_ERR, "TLS: mprotect: %s", strerror(errno));
		return -1;
	}
	ossl = t;
	return 0;
}
