/* chatdoc._yread: a fast path for chatdoc.causal.read_update_py, the reader of Yjs v1 updates.
 *
 * read_update(data: bytes) -> (ranges, refs, deletes) | None
 *
 * Returns exactly what the Python reader reads (see its comments for the format): `ranges`, per client in
 * update order, the clock ranges of its structs (GC included, split at Skip structs, clients with no range
 * left out); `refs`, every (client, clock) an item points at (origin, right origin, parent by id), in order;
 * `deletes`, the delete set's (client, start, end) ranges of non-zero length.
 *
 * The Python reader stays the reference: this one returns None whenever it does not handle the input fully
 * and certainly (truncated or malformed bytes, a varuint past 64 bits, a struct of length 0, trailing bytes,
 * `any` values nested deeper than MAX_DEPTH, anything not bytes), and the caller then runs the Python reader,
 * which raises UpdateError with its precise message or reads what this one declined. So no error is ever
 * made here, and every read is bounds-checked: the bytes come from the network.
 *
 * C99, Python.h only. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Content kinds: the low 5 bits of an item's info byte (Yjs `contentRefs`). */
enum { GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP };
#define HAS_ORIGIN 0x80
#define HAS_RIGHT_ORIGIN 0x40
#define HAS_PARENT_SUB 0x20
#define XML_ELEMENT 3 /* type refs that carry a name */
#define XML_HOOK 5
#define MAX_DEPTH 64 /* nesting of `any` values: deeper ones go to the Python reader */

/* The bytes and the position of the next read. Every reader below returns 1 when it read what it should
 * and 0 when it gives up (the input is truncated, malformed or unusual): then read_update returns None. */
typedef struct {
    const uint8_t *data;
    size_t len, pos;
} Reader;

/* A lib0 varuint: 7 bits a byte, low first. Only values that fit in 64 bits (at most 10 bytes). */
static inline int read_uint(Reader *r, uint64_t *out)
{
    uint64_t n = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len)
            return 0;
        uint8_t b = r->data[r->pos++];
        uint64_t bits = b & 0x7F;
        if (shift == 63 && bits > 1)
            return 0; /* past 64 bits */
        n |= bits << shift;
        if (b < 0x80) {
            *out = n;
            return 1;
        }
    }
    return 0; /* longer than 10 bytes */
}

/* Past `n` bytes, if there are that many. */
static inline int skip(Reader *r, uint64_t n)
{
    if (n > r->len - r->pos)
        return 0;
    r->pos += (size_t)n;
    return 1;
}

/* Past a length-prefixed byte string (a string, a buffer). */
static inline int skip_bytes(Reader *r)
{
    uint64_t n;
    return read_uint(r, &n) && skip(r, n);
}

/* Past a lib0 signed varint: at most 11 bytes, as the Python reader (its value is not needed). */
static int skip_int(Reader *r)
{
    for (int i = 0; i < 11; i++) {
        if (r->pos >= r->len)
            return 0;
        if (r->data[r->pos++] < 0x80)
            return 1;
    }
    return 0;
}

/* Past one lib0 `any` value (readAny's tags, 116-127). Its strings are skipped, not decoded (as in
 * Python). Every value takes at least its tag byte, so a count larger than what is left fails in bounded
 * time; nesting deeper than MAX_DEPTH gives up. */
static int skip_any(Reader *r, int depth)
{
    uint64_t n;
    if (depth > MAX_DEPTH || r->pos >= r->len)
        return 0;
    uint8_t tag = r->data[r->pos++];
    switch (tag) {
    case 119: /* string */
    case 116: /* Uint8Array */
        return skip_bytes(r);
    case 118: /* object: key, value pairs */
        if (!read_uint(r, &n))
            return 0;
        for (uint64_t i = 0; i < n; i++)
            if (!skip_bytes(r) || !skip_any(r, depth + 1))
                return 0;
        return 1;
    case 125: /* integer */
        return skip_int(r);
    case 127: /* undefined */
    case 126: /* null */
    case 121: /* false */
    case 120: /* true */
        return 1;
    case 117: /* array */
        if (!read_uint(r, &n))
            return 0;
        for (uint64_t i = 0; i < n; i++)
            if (!skip_any(r, depth + 1))
                return 0;
        return 1;
    case 124: /* float32 */
        return skip(r, 4);
    case 123: /* float64 */
    case 122: /* bigint64 */
        return skip(r, 8);
    default: /* unknown tag */
        return 0;
    }
}

/* The length in UTF-16 code units of `n` bytes of UTF-8, validated as strictly as Python's
 * bytes.decode("utf-8") (Unicode's table of well-formed sequences: no overlong forms, no surrogates,
 * nothing past U+10FFFF, no truncated sequence). 0 when they are no UTF-8. */
static int utf16_units(const uint8_t *s, size_t n, uint64_t *units)
{
    uint64_t count = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i += 1;
            count += 1;
            continue;
        }
        uint8_t lo = 0x80, hi = 0xBF; /* the range of the second byte */
        size_t size;
        if (b >= 0xC2 && b <= 0xDF)
            size = 2;
        else if (b >= 0xE0 && b <= 0xEF) {
            size = 3;
            if (b == 0xE0)
                lo = 0xA0; /* overlong below */
            else if (b == 0xED)
                hi = 0x9F; /* surrogates above */
        } else if (b >= 0xF0 && b <= 0xF4) {
            size = 4;
            if (b == 0xF0)
                lo = 0x90; /* overlong below */
            else if (b == 0xF4)
                hi = 0x8F; /* past U+10FFFF above */
        } else
            return 0; /* a continuation byte, an overlong lead (C0, C1) or F5-FF */
        if (size > n - i)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < size; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += size;
        count += size == 4 ? 2 : 1; /* past the BMP: a surrogate pair */
    }
    *units = count;
    return 1;
}

/* Past an item's content of `kind`; `*length` is its length in clock ticks (0 makes the caller give up). */
static int content(Reader *r, int kind, uint64_t *length)
{
    uint64_t n;
    switch (kind) {
    case STRING: {
        if (!read_uint(r, &n) || n > r->len - r->pos)
            return 0;
        const uint8_t *s = r->data + r->pos;
        r->pos += (size_t)n;
        size_t i = 0;
        while (i < n && s[i] < 0x80) /* ASCII: one UTF-16 code unit a byte */
            i++;
        if (i == n) {
            *length = n;
            return 1;
        }
        return utf16_units(s, (size_t)n, length);
    }
    case ANY:
        if (!read_uint(r, &n))
            return 0;
        for (uint64_t i = 0; i < n; i++)
            if (!skip_any(r, 0))
                return 0;
        *length = n;
        return 1;
    case DELETED:
        return read_uint(r, length);
    case EMBED: /* JSON text */
    case BINARY: /* bytes */
        *length = 1;
        return skip_bytes(r);
    case FORMAT: /* key, JSON value */
        *length = 1;
        return skip_bytes(r) && skip_bytes(r);
    case TYPE: /* a type ref; an XML element or hook carries a name */
        if (!read_uint(r, &n))
            return 0;
        *length = 1;
        return (n == XML_ELEMENT || n == XML_HOOK) ? skip_bytes(r) : 1;
    case JSON: /* legacy: n JSON strings */
        if (!read_uint(r, &n))
            return 0;
        for (uint64_t i = 0; i < n; i++)
            if (!skip_bytes(r))
                return 0;
        *length = n;
        return 1;
    case DOC: /* guid, options */
        *length = 1;
        return skip_bytes(r) && skip_any(r, 0);
    default: /* unknown content kind */
        return 0;
    }
}

/* -- building the result: these return -1 with a Python exception set when memory runs out ----------- */

/* The int object of `value`: `same` (a new reference to it) when `value` is `same_value`, as most references
 * are to the sender's own items. */
static PyObject *client_object(uint64_t value, PyObject *same, uint64_t same_value)
{
    if (same != NULL && value == same_value) {
        Py_INCREF(same);
        return same;
    }
    return PyLong_FromUnsignedLongLong(value);
}

/* list.append((first, second)); `first` is borrowed. */
static int append_pair(PyObject *list, PyObject *first, uint64_t second)
{
    PyObject *b = PyLong_FromUnsignedLongLong(second);
    if (b == NULL)
        return -1;
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(b);
        return -1;
    }
    Py_INCREF(first);
    PyTuple_SET_ITEM(pair, 0, first);
    PyTuple_SET_ITEM(pair, 1, b);
    int failed = PyList_Append(list, pair);
    Py_DECREF(pair);
    return failed;
}

/* list.append((start, end)) */
static int append_range(PyObject *list, uint64_t start, uint64_t end)
{
    PyObject *a = PyLong_FromUnsignedLongLong(start);
    if (a == NULL)
        return -1;
    int failed = append_pair(list, a, end);
    Py_DECREF(a);
    return failed;
}

/* list.append((client, start, end)); `client` is borrowed. */
static int append_delete(PyObject *list, PyObject *client, uint64_t start, uint64_t end)
{
    PyObject *a = PyLong_FromUnsignedLongLong(start);
    PyObject *b = a == NULL ? NULL : PyLong_FromUnsignedLongLong(end);
    PyObject *triple = b == NULL ? NULL : PyTuple_New(3);
    if (triple == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return -1;
    }
    Py_INCREF(client);
    PyTuple_SET_ITEM(triple, 0, client);
    PyTuple_SET_ITEM(triple, 1, a);
    PyTuple_SET_ITEM(triple, 2, b);
    int failed = PyList_Append(list, triple);
    Py_DECREF(triple);
    return failed;
}

/* An id (client, clock) an item points at, appended to `refs`. */
static int read_ref(Reader *r, PyObject *refs, PyObject *own, uint64_t own_value, int *failed)
{
    uint64_t client, clock;
    if (!read_uint(r, &client) || !read_uint(r, &clock))
        return 0;
    PyObject *c = client_object(client, own, own_value);
    if (c == NULL || append_pair(refs, c, clock) < 0)
        *failed = 1;
    Py_XDECREF(c);
    return !*failed;
}

/* -- the update ---------------------------------------------------------------------------------------- */

/* Give up (return None) unless `cond`. */
#define NEED(cond) \
    do {           \
        if (!(cond)) \
            goto give_up; \
    } while (0)
/* Out of memory (return NULL) if `call` < 0. */
#define CHECK(call) \
    do {            \
        if ((call) < 0) \
            goto error; \
    } while (0)

static PyObject *read_update(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_Check(arg)) /* the Python reader says what it makes of anything else */
        Py_RETURN_NONE;
    Reader rd = {(const uint8_t *)PyBytes_AS_STRING(arg), (size_t)PyBytes_GET_SIZE(arg), 0};
    Reader *r = &rd;
    PyObject *ranges = PyDict_New(), *refs = PyList_New(0), *deletes = PyList_New(0);
    PyObject *client_obj = NULL; /* the current struct block's client, or the delete set's */
    int failed = 0;              /* set by read_ref when memory ran out */
    uint64_t n_clients, n_structs, client, clock, length;
    if (ranges == NULL || refs == NULL || deletes == NULL)
        goto error;

    NEED(read_uint(r, &n_clients));
    for (uint64_t c = 0; c < n_clients; c++) {
        NEED(read_uint(r, &n_structs) && read_uint(r, &client) && read_uint(r, &clock));
        Py_XDECREF(client_obj);
        client_obj = PyLong_FromUnsignedLongLong(client);
        if (client_obj == NULL)
            goto error;
        PyObject *runs = PyDict_GetItemWithError(ranges, client_obj); /* borrowed: the dict keeps it */
        if (runs == NULL) {
            if (PyErr_Occurred())
                goto error;
            runs = PyList_New(0);
            if (runs == NULL)
                goto error;
            int set = PyDict_SetItem(ranges, client_obj, runs);
            Py_DECREF(runs);
            CHECK(set);
        }
        uint64_t run_start = clock;
        for (uint64_t s = 0; s < n_structs; s++) {
            NEED(r->pos < r->len);
            uint8_t info = r->data[r->pos++];
            int kind = info & 0x1F;
            if (kind == GC || kind == SKIP) {
                NEED(read_uint(r, &length));
                if (kind == SKIP) {
                    NEED(length > 0);
                    if (clock > run_start)
                        CHECK(append_range(runs, run_start, clock));
                    NEED(length <= UINT64_MAX - clock);
                    clock += length;
                    run_start = clock;
                    continue;
                }
            } else {
                if (info & HAS_ORIGIN) {
                    NEED(read_ref(r, refs, client_obj, client, &failed));
                }
                if (info & HAS_RIGHT_ORIGIN) {
                    NEED(read_ref(r, refs, client_obj, client, &failed));
                }
                if (!(info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN))) { /* the parent is written only then */
                    NEED(r->pos < r->len);
                    uint8_t by_name = r->data[r->pos++];
                    if (by_name == 1) { /* a root type, by name */
                        NEED(skip_bytes(r));
                    } else {
                        NEED(by_name == 0); /* a nested type: the item that holds it */
                        NEED(read_ref(r, refs, client_obj, client, &failed));
                    }
                    if (info & HAS_PARENT_SUB)
                        NEED(skip_bytes(r));
                }
                NEED(content(r, kind, &length));
            }
            NEED(length > 0 && length <= UINT64_MAX - clock);
            clock += length;
        }
        if (clock > run_start)
            CHECK(append_range(runs, run_start, clock));
        if (PyList_GET_SIZE(runs) == 0)
            CHECK(PyDict_DelItem(ranges, client_obj));
    }

    /* The delete set: per client, (start, length) ranges. */
    NEED(read_uint(r, &n_clients));
    for (uint64_t c = 0; c < n_clients; c++) {
        uint64_t n_ranges, start;
        NEED(read_uint(r, &client) && read_uint(r, &n_ranges));
        Py_XDECREF(client_obj);
        client_obj = PyLong_FromUnsignedLongLong(client);
        if (client_obj == NULL)
            goto error;
        for (uint64_t i = 0; i < n_ranges; i++) {
            NEED(read_uint(r, &start) && read_uint(r, &length));
            NEED(length <= UINT64_MAX - start);
            if (length)
                CHECK(append_delete(deletes, client_obj, start, start + length));
        }
    }
    NEED(r->pos == r->len); /* nothing after the update */

    Py_XDECREF(client_obj);
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        client_obj = NULL;
        goto error;
    }
    PyTuple_SET_ITEM(result, 0, ranges); /* steals the references */
    PyTuple_SET_ITEM(result, 1, refs);
    PyTuple_SET_ITEM(result, 2, deletes);
    return result;

give_up:
    if (failed) /* a read_ref that stopped because memory ran out */
        goto error;
    Py_XDECREF(client_obj);
    Py_DECREF(ranges);
    Py_DECREF(refs);
    Py_DECREF(deletes);
    Py_RETURN_NONE;
error:
    Py_XDECREF(client_obj);
    Py_XDECREF(ranges);
    Py_XDECREF(refs);
    Py_XDECREF(deletes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"read_update", read_update, METH_O,
     "read_update(data: bytes) -> (ranges, refs, deletes) | None\n\n"
     "The shape of a Yjs v1 update, as chatdoc.causal.read_update_py reads it; None when the bytes are not\n"
     "read here fully and certainly (malformed, truncated, unusual): then ask the Python reader."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chatdoc._yread",
    "A fast path for chatdoc.causal's reader of Yjs v1 updates (the Python reader is the reference).",
    0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__yread(void)
{
    return PyModuleDef_Init(&module);
}
