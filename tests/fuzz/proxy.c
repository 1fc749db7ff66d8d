/*
 * proxy.c: libFuzzer target for the PROXY protocol parser (proxy.c):
 * the framing (proxy_need) fed octet by octet as proxy_read does, the
 * parse of what it frames, and the --proxy-from list parser on the same
 * bytes as a string.  Checks the invariants the callers rely on: the
 * framing never asks past POP3D_PROXY_MAX, a parsed header is a record
 * the root parent accepts, and a client address prints.  Built with
 * -DFUZZ_REPLAY it runs the files named on its command line instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxy.h"

int	LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct proxy_net nets[POP3D_PROXY_FROM_MAX];
	struct proxy_hdr h;
	struct proxy_addr a;
	char text[64], list[512];
	const char *why;
	size_t n = 0;
	long need;
	int i, count;

	/* framing as proxy_read reads: never past the input's header */
	while ((need = proxy_need(data, n)) > 0) {
		if (n + (size_t)need > POP3D_PROXY_MAX)
			abort();
		if (n + (size_t)need > size)
			break;
		n += (size_t)need;
	}
	if (need == 0 && proxy_parse(data, n, &h, &why) == 0) {
		if (!proxy_hdr_check(&h))
			abort();
		if (h.kind == PROXY_TCP &&
		    proxy_addr_str(&h.src, text, sizeof(text))[0] == '\0')
			abort();
	}
	/* the whole input too, framed or not: refused or a checked record */
	if (proxy_parse(data, size, &h, &why) == 0 && !proxy_hdr_check(&h))
		abort();
	if (size < sizeof(list)) {
		memcpy(list, data, size);
		list[size] = '\0';
		count = proxy_list_parse(list, nets, POP3D_PROXY_FROM_MAX, &why);
		if (count > POP3D_PROXY_FROM_MAX)
			abort();
		for (i = 0; i < count; i++)
			if (nets[i].bits > (nets[i].a.family == AF_INET ? 32u :
			    128u) || !proxy_list_match(nets, (size_t)count,
			    &nets[i].a))
				abort();
		if (proxy_addr_parse(list, &a) == 0 &&
		    proxy_addr_str(&a, text, sizeof(text))[0] == '\0')
			abort();
	}
	return 0;
}

#ifdef FUZZ_REPLAY
#include "replay.h"
#endif
