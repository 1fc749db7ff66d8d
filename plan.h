/*
 * plan.h: the plan of an UPDATE (plan.c): kept runs and their
 * destinations, pure arithmetic.
 */
#ifndef PLAN_H
#define PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <md5.h>

struct jrun {
	uint64_t	 src, len;
};

struct plan {
	struct jrun	*run;
	uint64_t	*dst;
	size_t		 n, alloc;
	uint64_t	 old, final, gen;
	uint64_t	 tail_len;
	unsigned char	 tail[MD5_DIGEST_LENGTH];
};

void	plan_add(struct plan *p, uint64_t src, uint64_t len);
int	plan_seal(struct plan *p);
size_t	plan_index(const struct plan *p, uint64_t x);
uint64_t	plan_src(const struct plan *p, uint64_t x);
uint64_t	plan_start(const struct plan *p);
void	plan_set_tail_len(struct plan *p);
int	plan_gen(struct plan *p, uint64_t gen, uint64_t base, uint64_t ext,
    uint64_t old);

#endif
