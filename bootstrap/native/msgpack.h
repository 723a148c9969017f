/*
 * The subset of MessagePack the control channel uses (bootstrap/protocol.py):
 * maps with string keys whose values are nil, booleans, integers, strings, binary,
 * arrays of strings and maps of strings. Encoding writes into a growable buffer;
 * decoding builds a small tree that points into the frame (no copies).
 */
#ifndef SNAPSTART_MSGPACK_H
#define SNAPSTART_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	char *data;
	size_t len, cap;
};

int buf_put(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);

/* encoding */
int mp_map(struct buf *b, uint32_t n);
int mp_str(struct buf *b, const char *s, size_t n);
int mp_cstr(struct buf *b, const char *s);
int mp_bin(struct buf *b, const void *p, size_t n);
int mp_int(struct buf *b, int64_t v);
int mp_nil(struct buf *b);

/* decoding */
enum mp_type { MP_NIL, MP_BOOL, MP_INT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_FLOAT };

struct mp_value {
	enum mp_type type;
	int64_t i;                 /* MP_INT, MP_BOOL */
	const char *p;             /* MP_STR, MP_BIN: bytes (not NUL-terminated) */
	uint32_t n;                /* MP_STR/MP_BIN length, MP_ARRAY/MP_MAP count */
	struct mp_value *items;    /* MP_ARRAY: n values; MP_MAP: 2n (key, value) */
};

/* Decode one value from [p, p+len); 0, or -1 on malformed or over-deep input.
 * *v must be released with mp_free. */
int mp_decode(const char *p, size_t len, struct mp_value *v);
void mp_free(struct mp_value *v);
/* the value of string key k in map m, or NULL */
const struct mp_value *mp_get(const struct mp_value *m, const char *k);

#endif
