/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 compressed clusters (spec "Compressed Clusters Descriptor").
 *
 * QEMU writes zlib clusters as raw deflate streams with a 4 KiB window
 * (windowBits -12, block/qcow2-threads.c). The descriptor gives a host
 * byte offset and a count of 512-byte sectors, so the input handed to
 * inflate is rounded up to a sector: the stream normally ends before the
 * input does, and it may also run out of output first (Z_BUF_ERROR with
 * the output full), which is success. Anything that does not produce
 * exactly one cluster is corruption. The data may straddle into the next
 * host cluster and the last sector may extend past the end of the file
 * (bytes there read as zeros).
 *
 * Runs without q->lock: only fields fixed at open are used, and the host
 * offset was checked against the file size when the entry was classified.
 *
 * Reads smaller than a cluster would inflate the same cluster again for
 * every piece (a 2 MiB cluster read in 64 KiB pieces: 32 times), so the
 * last QCOW2_CCACHE_SLOTS decompressed clusters are kept, keyed by their
 * L2 descriptor (we never write compressed clusters, so a descriptor
 * names the same bytes for the life of the open image). Decompression
 * runs outside cc_lock: concurrent readers of one cluster may both
 * inflate it, which is only wasted work.
 */
#include "qcow2.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "lib/common/error.h"
#include "lib/common/util.h"

/* Reads are aligned to this, or to the O_DIRECT alignment when larger. */
#define CBUF_ALIGN 4096u

/* Inflate @in into exactly @out_len bytes; 0 or -EUCLEAN/-ENOMEM. */
static int inflate_cluster(uint8_t *in, uint64_t in_len, uint8_t *out,
			   uint64_t out_len)
{
	z_stream zs;
	int zr, ret = 0;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, -12) != Z_OK)
		return -ENOMEM;
	zs.next_in = in;
	zs.avail_in = (uInt)in_len;
	zs.next_out = out;
	zs.avail_out = (uInt)out_len;
	zr = inflate(&zs, Z_FINISH);
	if (!((zr == Z_STREAM_END || zr == Z_BUF_ERROR) && zs.avail_out == 0))
		ret = zr == Z_MEM_ERROR ? -ENOMEM : -EUCLEAN;
	(void)inflateEnd(&zs);
	return ret;
}

int qcow2_read_compressed(struct qcow2 *q, uint64_t raw, uint8_t *out)
{
	uint64_t coff, nbytes, end, start, rend, align;
	uint8_t *buf;
	void *p;
	int ret;

	qcow2_compressed_desc(q, raw, &coff, &nbytes);
	/* At most 2^(cluster_bits-8) sectors: the sum cannot overflow. */
	if ((coff >> 56) || bc_add_overflow(coff, nbytes, &end))
		return qcow2_corrupt(
			q->img->filename,
			"invalid compressed cluster descriptor 0x%016" PRIx64,
			raw);
	align = BC_MAX(CBUF_ALIGN, q->img->request_align);
	start = bc_align_down(coff, align);
	rend = bc_align_up(end, align);
	if (posix_memalign(&p, align, (size_t)(rend - start)))
		return -ENOMEM;
	buf = p;
	ret = fmt_pread_file_zfill(q->img->fd, buf, (size_t)(rend - start),
				   start);
	if (ret < 0) {
		char eb[128];

		bc_error_set_default(
			bc_errno_to_code(-ret), -ret,
			"%s: cannot read compressed cluster at offset %" PRIu64
			": %s",
			q->img->filename, coff,
			strerror_r(-ret, eb, sizeof(eb)));
		goto out_free;
	}
	ret = inflate_cluster(buf + (coff - start), nbytes, out,
			      q->cluster_size);
	if (ret == -EUCLEAN)
		(void)qcow2_corrupt(
			q->img->filename,
			"compressed cluster at host offset 0x%" PRIx64
			" does not decompress to one cluster",
			coff);
out_free:
	free(buf);
	return ret;
}

int qcow2_compressed_pread(struct qcow2 *q, uint64_t raw, uint64_t in_off,
			   void *buf, size_t n)
{
	uint8_t *data = NULL;
	int i, victim = 0, ret;

	assert(in_off + n <= q->cluster_size);
	pthread_mutex_lock(&q->cc_lock);
	for (i = 0; i < QCOW2_CCACHE_SLOTS; i++) {
		if (q->ccache[i].raw == raw && q->ccache[i].data) {
			q->ccache[i].last_used = ++q->cc_clock;
			memcpy(buf, q->ccache[i].data + in_off, n);
			pthread_mutex_unlock(&q->cc_lock);
			return 0;
		}
		if (q->ccache[i].last_used < q->ccache[victim].last_used)
			victim = i;
	}
	/* Take the victim's buffer to decompress into, outside the lock. */
	data = q->ccache[victim].data;
	q->ccache[victim].data = NULL;
	q->ccache[victim].raw = 0;
	q->ccache[victim].last_used = 0;
	q->cc_inflates++;
	pthread_mutex_unlock(&q->cc_lock);

	if (!data) {
		void *p;

		if (posix_memalign(&p, CBUF_ALIGN, (size_t)q->cluster_size))
			return -ENOMEM;
		data = p;
	}
	ret = qcow2_read_compressed(q, raw, data);
	if (ret < 0) {
		free(data);
		return ret;
	}
	memcpy(buf, data + in_off, n);

	pthread_mutex_lock(&q->cc_lock);
	for (i = 0; i < QCOW2_CCACHE_SLOTS; i++) {
		if (!q->ccache[i].data) {
			q->ccache[i].data = data;
			q->ccache[i].raw = raw;
			q->ccache[i].last_used = ++q->cc_clock;
			data = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&q->cc_lock);
	free(data); /* every slot refilled meanwhile by other readers */
	return 0;
}

void qcow2_ccache_free(struct qcow2 *q)
{
	int i;

	for (i = 0; i < QCOW2_CCACHE_SLOTS; i++) {
		free(q->ccache[i].data);
		q->ccache[i].data = NULL;
		q->ccache[i].raw = 0;
	}
}
