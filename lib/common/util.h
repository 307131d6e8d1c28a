/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Leaf helpers callable from every layer: scoped cleanup, overflow-checked
 * arithmetic, alignment, big-endian loads and stores, zero detection.
 * Nothing here calls into the project.
 */
#ifndef BC_LIB_COMMON_UTIL_H
#define BC_LIB_COMMON_UTIL_H

#include <endian.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef __cold
#define __cold __attribute__((cold))
#endif

#define BC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define BC_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define BC_MAX(a, b)     ((a) > (b) ? (a) : (b))

static inline void bc_freep(void *pp)
{
	free(*(void **)pp);
}

static inline void bc_closep(int *fdp)
{
	if (*fdp >= 0)
		(void)close(*fdp);
}

/* Frees the pointer when it goes out of scope (control paths only). */
#define BC_AUTOFREE  __attribute__((cleanup(bc_freep)))
/* Closes the descriptor (if >= 0) when it goes out of scope. */
#define BC_AUTOCLOSE __attribute__((cleanup(bc_closep)))

/* Returns *pp and clears it, so a BC_AUTOFREE variable hands over ownership. */
static inline void *bc_steal_ptr(void *pp)
{
	void **p = pp;
	void *ret = *p;

	*p = NULL;
	return ret;
}

/* Returns fd and sets *fdp to -1 (ownership leaves a BC_AUTOCLOSE scope). */
static inline int bc_steal_fd(int *fdp)
{
	int fd = *fdp;

	*fdp = -1;
	return fd;
}

static inline void bc_unlockp(pthread_mutex_t **mp)
{
	if (*mp)
		pthread_mutex_unlock(*mp);
}

#define BC_CONCAT_(a, b) a##b
#define BC_CONCAT(a, b)  BC_CONCAT_(a, b)
/* Holds the mutex until the end of the enclosing scope. */
#define BC_LOCK_GUARD(m)                                                     \
	__attribute__((cleanup(bc_unlockp), unused)) pthread_mutex_t         \
		*BC_CONCAT(bc_guard_, __LINE__) = (pthread_mutex_lock(m), (m))

/* Overflow-checked arithmetic: true when the result overflowed. */
#define bc_add_overflow(a, b, r) __builtin_add_overflow((a), (b), (r))
#define bc_mul_overflow(a, b, r) __builtin_mul_overflow((a), (b), (r))

static inline bool bc_is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* Alignment helpers; @a must be a power of two. */
static inline uint64_t bc_align_down(uint64_t x, uint64_t a)
{
	return x & ~(a - 1);
}

static inline uint64_t bc_align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static inline bool bc_is_aligned(uint64_t x, uint64_t a)
{
	return (x & (a - 1)) == 0;
}

/* x / d rounded up, without overflow near UINT64_MAX; @d > 0. */
static inline uint64_t bc_div_round_up(uint64_t x, uint64_t d)
{
	return x / d + (x % d != 0);
}

/* Big-endian loads/stores through memcpy (no unaligned casts). */
static inline uint16_t bc_get_be16(const void *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

static inline uint32_t bc_get_be32(const void *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static inline uint64_t bc_get_be64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline void bc_put_be16(void *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void bc_put_be32(void *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void bc_put_be64(void *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
}

/*
 * True when the buffer is all zero bytes: check the first 16 bytes, then
 * compare the buffer with itself shifted (as nbdkit's iszero.h does), which
 * lets memcmp run at memory speed.
 */
static inline bool bc_is_zero(const void *buf, size_t n)
{
	const unsigned char *p = buf;
	size_t i, head = n < 16 ? n : 16;

	for (i = 0; i < head; i++) {
		if (p[i])
			return false;
	}
	if (n <= 16)
		return true;
	return memcmp(p, p + 16, n - 16) == 0;
}

/*
 * splitmix64: the next value of a 64-bit pseudo-random sequence whose state
 * is *s; deterministic across libcs, unlike rand(). For test patterns and
 * the synthetic guest, never for anything that must be unpredictable.
 */
static inline uint64_t bc_splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#endif /* BC_LIB_COMMON_UTIL_H */
