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
 */
#include "qcow2.h"

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
		return qcow2_corrupt(q->img->filename,
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

		bc_error_set_default(bc_errno_to_code(-ret), -ret,
				     "%s: cannot read compressed cluster at offset %" PRIu64 ": %s",
				     q->img->filename, coff,
				     strerror_r(-ret, eb, sizeof(eb)));
		goto out_free;
	}
	ret = inflate_cluster(buf + (coff - start), nbytes, out,
			      q->cluster_size);
	if (ret == -EUCLEAN)
		(void)qcow2_corrupt(q->img->filename,
			      "compressed cluster at host offset 0x%" PRIx64 " does not decompress to one cluster",
			      coff);
out_free:
	free(buf);
	return ret;
}
