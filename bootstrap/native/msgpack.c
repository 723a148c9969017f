/* See msgpack.h. */
#include "msgpack.h"

#include <stdlib.h>
#include <string.h>

int buf_put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int put_be(struct buf *b, uint8_t tag, uint64_t v, int bytes)
{
	unsigned char out[9];
	int i;

	out[0] = tag;
	for (i = 0; i < bytes; i++)
		out[1 + i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
	return buf_put(b, out, 1 + bytes);
}

int mp_map(struct buf *b, uint32_t n)
{
	if (n < 16) {
		unsigned char t = 0x80 | n;

		return buf_put(b, &t, 1);
	}
	return n < 65536 ? put_be(b, 0xde, n, 2) : put_be(b, 0xdf, n, 4);
}

int mp_str(struct buf *b, const char *s, size_t n)
{
	int r;

	if (n < 32) {
		unsigned char t = 0xa0 | n;

		r = buf_put(b, &t, 1);
	} else if (n < 256)
		r = put_be(b, 0xd9, n, 1);
	else if (n < 65536)
		r = put_be(b, 0xda, n, 2);
	else
		r = put_be(b, 0xdb, n, 4);
	return r ? r : buf_put(b, s, n);
}

int mp_cstr(struct buf *b, const char *s)
{
	return mp_str(b, s, strlen(s));
}

int mp_bin(struct buf *b, const void *p, size_t n)
{
	int r;

	if (n < 256)
		r = put_be(b, 0xc4, n, 1);
	else if (n < 65536)
		r = put_be(b, 0xc5, n, 2);
	else
		r = put_be(b, 0xc6, n, 4);
	return r ? r : buf_put(b, p, n);
}

int mp_int(struct buf *b, int64_t v)
{
	if (v >= 0 && v < 128) {
		unsigned char t = v;

		return buf_put(b, &t, 1);
	}
	if (v < 0 && v >= -32) {
		unsigned char t = (unsigned char)(0xe0 | (v + 32));

		return buf_put(b, &t, 1);
	}
	return put_be(b, 0xd3, (uint64_t)v, 8);
}

int mp_nil(struct buf *b)
{
	unsigned char t = 0xc0;

	return buf_put(b, &t, 1);
}

/* ---- decoding ---------------------------------------------------------------- */

struct reader {
	const unsigned char *p, *end;
};

static int need(struct reader *r, size_t n)
{
	return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

static uint64_t take_be(struct reader *r, int bytes)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < bytes; i++)
		v = (v << 8) | r->p[i];
	r->p += bytes;
	return v;
}

static int decode(struct reader *r, struct mp_value *v, int depth);

static int decode_items(struct reader *r, struct mp_value *v, uint32_t n, int pairs, int depth)
{
	uint32_t count = pairs ? 2 * n : n, i;

	if (n > (uint32_t)(r->end - r->p))      /* each item takes a byte at least */
		return -1;
	v->n = n;
	v->items = count ? calloc(count, sizeof(*v->items)) : NULL;
	if (count && !v->items)
		return -1;
	for (i = 0; i < count; i++)
		if (decode(r, &v->items[i], depth + 1))
			return -1;
	return 0;
}

static int decode_bytes(struct reader *r, struct mp_value *v, enum mp_type t, uint64_t n)
{
	if (need(r, n))
		return -1;
	v->type = t;
	v->p = (const char *)r->p;
	v->n = (uint32_t)n;
	r->p += n;
	return 0;
}

static int decode(struct reader *r, struct mp_value *v, int depth)
{
	unsigned char c;

	memset(v, 0, sizeof(*v));
	if (depth > 8 || need(r, 1))
		return -1;
	c = *r->p++;
	if (c < 0x80) {
		v->type = MP_INT;
		v->i = c;
		return 0;
	}
	if (c >= 0xe0) {
		v->type = MP_INT;
		v->i = (int8_t)c;
		return 0;
	}
	if ((c & 0xf0) == 0x80) {
		v->type = MP_MAP;
		return decode_items(r, v, c & 0x0f, 1, depth);
	}
	if ((c & 0xf0) == 0x90) {
		v->type = MP_ARRAY;
		return decode_items(r, v, c & 0x0f, 0, depth);
	}
	if ((c & 0xe0) == 0xa0)
		return decode_bytes(r, v, MP_STR, c & 0x1f);
	switch (c) {
	case 0xc0:
		v->type = MP_NIL;
		return 0;
	case 0xc2:
	case 0xc3:
		v->type = MP_BOOL;
		v->i = c == 0xc3;
		return 0;
	case 0xc4: case 0xc5: case 0xc6: {
		int w = c == 0xc4 ? 1 : c == 0xc5 ? 2 : 4;

		if (need(r, w))
			return -1;
		return decode_bytes(r, v, MP_BIN, take_be(r, w));
	}
	case 0xd9: case 0xda: case 0xdb: {
		int w = c == 0xd9 ? 1 : c == 0xda ? 2 : 4;

		if (need(r, w))
			return -1;
		return decode_bytes(r, v, MP_STR, take_be(r, w));
	}
	case 0xcc: case 0xcd: case 0xce: case 0xcf: {
		int w = 1 << (c - 0xcc);

		if (need(r, w))
			return -1;
		v->type = MP_INT;
		v->i = (int64_t)take_be(r, w);
		return 0;
	}
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
		int w = 1 << (c - 0xd0);
		uint64_t raw;

		if (need(r, w))
			return -1;
		raw = take_be(r, w);
		v->type = MP_INT;
		if (w < 8 && (raw >> (8 * w - 1)))   /* sign-extend */
			raw |= ~0ULL << (8 * w);
		v->i = (int64_t)raw;
		return 0;
	}
	case 0xca: case 0xcb:                    /* floats: skipped, never used */
		if (need(r, c == 0xca ? 4 : 8))
			return -1;
		r->p += c == 0xca ? 4 : 8;
		v->type = MP_FLOAT;
		return 0;
	case 0xdc: case 0xdd:
		if (need(r, c == 0xdc ? 2 : 4))
			return -1;
		v->type = MP_ARRAY;
		return decode_items(r, v, (uint32_t)take_be(r, c == 0xdc ? 2 : 4), 0, depth);
	case 0xde: case 0xdf:
		if (need(r, c == 0xde ? 2 : 4))
			return -1;
		v->type = MP_MAP;
		return decode_items(r, v, (uint32_t)take_be(r, c == 0xde ? 2 : 4), 1, depth);
	}
	return -1;
}

int mp_decode(const char *p, size_t len, struct mp_value *v)
{
	struct reader r = { (const unsigned char *)p, (const unsigned char *)p + len };

	if (decode(&r, v, 0) || r.p != r.end) {
		mp_free(v);
		return -1;
	}
	return 0;
}

void mp_free(struct mp_value *v)
{
	uint32_t i, count;

	if (v->type != MP_ARRAY && v->type != MP_MAP)
		return;
	count = v->type == MP_MAP ? 2 * v->n : v->n;
	if (v->items)
		for (i = 0; i < count; i++)
			mp_free(&v->items[i]);
	free(v->items);
	v->items = NULL;
}

const struct mp_value *mp_get(const struct mp_value *m, const char *k)
{
	size_t kl = strlen(k);
	uint32_t i;

	if (m->type != MP_MAP)
		return NULL;
	for (i = 0; i < m->n; i++) {
		const struct mp_value *key = &m->items[2 * i];

		if (key->type == MP_STR && key->n == kl && memcmp(key->p, k, kl) == 0)
			return &m->items[2 * i + 1];
	}
	return NULL;
}
