/*
 * plan.c: the plan of an UPDATE, pure arithmetic without I/O: the kept
 * runs of the old file in order, where each goes (dst), the old offset of
 * any output octet (src), where the first move starts, and the plan a
 * journal record's generation describes.
 * Calls: log.c (allocation).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "pop3d.h"

/* Appends a kept run, merged with the previous one when adjacent. */
void
plan_add(struct plan *p, uint64_t src, uint64_t len)
{
	if (len == 0)
		return;
	if (p->n > 0 && p->run[p->n - 1].src + p->run[p->n - 1].len == src) {
		p->run[p->n - 1].len += len;
		return;
	}
	if (p->n == p->alloc) {
		p->alloc = p->alloc ? p->alloc * 2 : 16;
		p->run = xreallocarray(p->run, p->alloc, sizeof(*p->run));
	}
	p->run[p->n].src = src;
	p->run[p->n].len = len;
	p->n++;
}

/* Computes dst[] and final.  Returns 0, or -1 if the runs are not in
 * order within [0, old). */
int
plan_seal(struct plan *p)
{
	uint64_t d = 0, end = 0;
	size_t i;

	free(p->dst);
	p->dst = xreallocarray(NULL, p->n ? p->n : 1, sizeof(*p->dst));
	for (i = 0; i < p->n; i++) {
		if (p->run[i].src < end || p->run[i].len == 0 ||
		    p->run[i].len > p->old - p->run[i].src ||
		    p->run[i].src > p->old)
			return -1;
		end = p->run[i].src + p->run[i].len;
		p->dst[i] = d;
		d += p->run[i].len;
	}
	p->final = d;
	return 0;
}

/* The run holding output octet x < final. */
size_t
plan_index(const struct plan *p, uint64_t x)
{
	size_t lo = 0, hi = p->n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->dst[mid] <= x)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* src(x); old for x >= final. */
uint64_t
plan_src(const struct plan *p, uint64_t x)
{
	size_t i;

	if (x >= p->final)
		return p->old;
	i = plan_index(p, x);
	return p->run[i].src + (x - p->dst[i]);
}

/* The first output octet that moves; final when none does. */
uint64_t
plan_start(const struct plan *p)
{
	size_t i;

	for (i = 0; i < p->n; i++)
		if (p->run[i].src != p->dst[i])
			return p->dst[i];
	return p->final;
}

void
plan_set_tail_len(struct plan *p)
{
	uint64_t gone = p->old - p->final;

	p->tail_len = gone < MBOX_TAIL_MAX ? gone : MBOX_TAIL_MAX;
}

/* Makes the plan of generation gen > 0: keep [0, base), then move
 * [ext, old) down to base. */
int
plan_gen(struct plan *p, uint64_t gen, uint64_t base, uint64_t ext,
    uint64_t old)
{
	p->n = 0;
	p->gen = gen;
	p->old = old;
	if (base > ext || ext >= old)
		return -1;
	plan_add(p, 0, base);
	if (p->n != 1 || ext == base)
		return -1;
	plan_add(p, ext, old - ext);
	return plan_seal(p);
}
