/* Kafka v2 records, compiled: the hot loops of gateway/kafka/unpack.py (decode_batch) and
 * gateway/kafka/append.py (encode_into), for the input they are sure about.
 *
 * Each function returns None for anything irregular (a malformed or truncated record, a
 * value that does not fit in 64 bits, an argument of another type) and the Python function
 * then does the same work itself: its result, or its error with its own message. So these
 * never decide what a malformed batch means; they only take the well-formed ones faster.
 * Every read is bounds-checked. Both hold the interpreter lock throughout. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* --- decoding ------------------------------------------------------------------------------ */

/* A zig-zag varint at *pos: 0 on success, -1 when cut off, over ten bytes or over 64 bits. */
static int get_varint(const unsigned char *b, Py_ssize_t end, Py_ssize_t *pos, int64_t *out) {
    uint64_t acc = 0;
    Py_ssize_t p = *pos;
    for (int i = 0; i < 10; i++) {
        if (p >= end) {
            return -1;
        }
        unsigned int n = b[p++];
        if (i == 9 && (n & 0x7F) > 1) {
            return -1; /* beyond 64 bits: the Python code's big ints */
        }
        acc |= (uint64_t)(n & 0x7F) << (7 * i);
        if (n < 0x80) {
            *out = (int64_t)((acc >> 1) ^ (~(acc & 1) + 1));
            *pos = p;
            return 0;
        }
    }
    return -1;
}

/* A length-prefixed field: -1 (null) gives *null = 1; a length past the end is irregular. */
static int get_field(const unsigned char *b, Py_ssize_t end, Py_ssize_t *pos, Py_ssize_t *at,
                     Py_ssize_t *size, int *null) {
    int64_t n;
    if (get_varint(b, end, pos, &n) < 0) {
        return -1;
    }
    if (n < 0) {
        *null = 1;
        *size = 0;
        *at = *pos;
        return 0;
    }
    if (n > end - *pos) {
        return -1;
    }
    *null = 0;
    *at = *pos;
    *size = (Py_ssize_t)n;
    *pos += (Py_ssize_t)n;
    return 0;
}

static int add_overflows(int64_t a, int64_t b, int64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

/* decode_batch(buf, pos, count, topic, partition, base_offset, first_timestamp,
 *              log_append_time, record_type) -> list of record_type, or None (irregular) */
static PyObject *decode_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 9 || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2]) || !PyUnicode_CheckExact(args[3]) ||
        !PyLong_CheckExact(args[4]) || !PyLong_CheckExact(args[5]) ||
        !PyLong_CheckExact(args[6]) || !PyType_Check(args[8]) ||
        !PyType_IsSubtype((PyTypeObject *)args[8], &PyTuple_Type)) {
        Py_RETURN_NONE;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]);
    int overflow = 0;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    long long base_offset = PyLong_AsLongLongAndOverflow(args[5], &overflow);
    long long first_ts = overflow ? 0 : PyLong_AsLongLongAndOverflow(args[6], &overflow);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (overflow || pos < 0 || pos > end || count < 0 || count > end - pos) {
        Py_RETURN_NONE; /* each record takes at least one byte */
    }
    PyObject *log_append = args[7] == Py_None ? NULL : args[7];
    PyObject *topic = args[3], *partition = args[4];
    PyTypeObject *record_type = (PyTypeObject *)args[8];
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        int64_t length, ts_delta, offset_delta, n_headers;
        if (get_varint(b, end, &pos, &length) < 0) {
            goto irregular;
        }
        Py_ssize_t start = pos;
        pos += 1; /* attributes (unused) */
        if (get_varint(b, end, &pos, &ts_delta) < 0 ||
            get_varint(b, end, &pos, &offset_delta) < 0) {
            goto irregular;
        }
        Py_ssize_t key_at, key_size, value_at, value_size;
        int key_null, value_null;
        if (get_field(b, end, &pos, &key_at, &key_size, &key_null) < 0 ||
            get_field(b, end, &pos, &value_at, &value_size, &value_null) < 0 ||
            get_varint(b, end, &pos, &n_headers) < 0 || n_headers < 0 ||
            n_headers > end - pos) {
            goto irregular;
        }
        int64_t offset, timestamp = 0;
        if (add_overflows(base_offset, offset_delta, &offset) ||
            (log_append == NULL && add_overflows(first_ts, ts_delta, &timestamp))) {
            goto irregular;
        }
        PyObject *headers;
        if (n_headers == 0) {
            headers = PyTuple_New(0);
            if (headers == NULL) {
                goto error;
            }
        } else {
            headers = PyList_New((Py_ssize_t)n_headers);
            if (headers == NULL) {
                goto error;
            }
            for (Py_ssize_t h = 0; h < (Py_ssize_t)n_headers; h++) {
                Py_ssize_t name_at, name_size, data_at, data_size;
                int name_null, data_null;
                if (get_field(b, end, &pos, &name_at, &name_size, &name_null) < 0 || name_null ||
                    get_field(b, end, &pos, &data_at, &data_size, &data_null) < 0) {
                    Py_DECREF(headers);
                    goto irregular;
                }
                PyObject *name =
                    PyUnicode_DecodeUTF8((const char *)b + name_at, name_size, "strict");
                if (name == NULL) {
                    PyErr_Clear();
                    Py_DECREF(headers);
                    goto irregular;
                }
                PyObject *data = PyBytes_FromStringAndSize((const char *)b + data_at, data_size);
                PyObject *pair = data == NULL ? NULL : PyTuple_Pack(2, name, data);
                Py_DECREF(name);
                Py_XDECREF(data);
                if (pair == NULL) {
                    Py_DECREF(headers);
                    goto error;
                }
                PyList_SET_ITEM(headers, h, pair);
            }
        }
        if (pos - start != length || pos > end) {
            Py_DECREF(headers);
            goto irregular;
        }
        PyObject *key = key_null ? Py_NewRef(Py_None)
                                 : PyBytes_FromStringAndSize((const char *)b + key_at, key_size);
        PyObject *value = value_null
                              ? Py_NewRef(Py_None)
                              : PyBytes_FromStringAndSize((const char *)b + value_at, value_size);
        PyObject *offset_obj = PyLong_FromLongLong((long long)offset);
        PyObject *ts_obj =
            log_append != NULL ? Py_NewRef(log_append) : PyLong_FromLongLong((long long)timestamp);
        PyObject *record = NULL;
        if (key != NULL && value != NULL && offset_obj != NULL && ts_obj != NULL) {
            record = record_type->tp_alloc(record_type, 7);
        }
        if (record == NULL) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_XDECREF(offset_obj);
            Py_XDECREF(ts_obj);
            Py_DECREF(headers);
            goto error;
        }
        PyTuple_SET_ITEM(record, 0, Py_NewRef(topic));
        PyTuple_SET_ITEM(record, 1, Py_NewRef(partition));
        PyTuple_SET_ITEM(record, 2, offset_obj);
        PyTuple_SET_ITEM(record, 3, key);
        PyTuple_SET_ITEM(record, 4, value);
        PyTuple_SET_ITEM(record, 5, headers);
        PyTuple_SET_ITEM(record, 6, ts_obj);
        PyList_SET_ITEM(out, r, record);
    }
    if (pos != end) {
        goto irregular;
    }
    return out;
irregular:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

/* --- encoding ------------------------------------------------------------------------------ */

static Py_ssize_t varint_size(int64_t value) {
    uint64_t v = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *put_varint(char *at, int64_t value) {
    uint64_t v = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (v >= 0x80) {
        *at++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *at++ = (char)v;
    return at;
}

/* One record's body size (attributes to the last header), or -1 when a part is not of the
 * (bytes, bytes, [(str, bytes)]) kind. */
static Py_ssize_t body_size(PyObject *item, int64_t ts_delta, int64_t offset_delta) {
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
        return -1;
    }
    PyObject *key = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
    PyObject *headers = PyTuple_GET_ITEM(item, 2);
    if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) ||
        !(PyList_CheckExact(headers) || PyTuple_CheckExact(headers))) {
        return -1;
    }
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(headers);
    Py_ssize_t size = 1 + varint_size(ts_delta) + varint_size(offset_delta) +
                      varint_size(PyBytes_GET_SIZE(key)) + PyBytes_GET_SIZE(key) +
                      varint_size(PyBytes_GET_SIZE(value)) + PyBytes_GET_SIZE(value) +
                      varint_size(nh);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t h = 0; h < nh; h++) {
        PyObject *pair = items[h];
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            return -1;
        }
        Py_ssize_t name_size;
        if (PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_size) == NULL) {
            PyErr_Clear(); /* a lone surrogate: the Python code raises its own error */
            return -1;
        }
        Py_ssize_t data_size = PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
        size += varint_size(name_size) + name_size + varint_size(data_size) + data_size;
    }
    return size;
}

static char *put_body(char *at, PyObject *item, int64_t ts_delta, int64_t offset_delta) {
    PyObject *key = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
    PyObject *headers = PyTuple_GET_ITEM(item, 2);
    *at++ = 0; /* attributes */
    at = put_varint(at, ts_delta);
    at = put_varint(at, offset_delta);
    at = put_varint(at, PyBytes_GET_SIZE(key));
    memcpy(at, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key));
    at += PyBytes_GET_SIZE(key);
    at = put_varint(at, PyBytes_GET_SIZE(value));
    memcpy(at, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
    at += PyBytes_GET_SIZE(value);
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(headers);
    at = put_varint(at, nh);
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t h = 0; h < nh; h++) {
        Py_ssize_t name_size;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(items[h], 0), &name_size);
        PyObject *data = PyTuple_GET_ITEM(items[h], 1);
        at = put_varint(at, name_size);
        memcpy(at, name, (size_t)name_size);
        at += name_size;
        at = put_varint(at, PyBytes_GET_SIZE(data));
        memcpy(at, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
        at += PyBytes_GET_SIZE(data);
    }
    return at;
}

#define MAX_BATCH_RECORDS 65536

/* encode_records(buf, batch_size, num_records, group, i, offset, ts_delta)
 *   -> (appended, largest), or None (irregular: nothing written)
 * Appends group[i:] to the bytearray buf as v2 records with offset deltas offset, offset + 1,
 * ... until one would take buf past batch_size (a batch with no record yet always takes its
 * first). */
static PyObject *encode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 7 || !PyByteArray_CheckExact(args[0]) || !PyList_CheckExact(args[3])) {
        Py_RETURN_NONE;
    }
    PyObject *buf = args[0], *group = args[3];
    Py_ssize_t batch_size = PyLong_AsSsize_t(args[1]);
    Py_ssize_t num_records = PyLong_AsSsize_t(args[2]);
    Py_ssize_t i = PyLong_AsSsize_t(args[4]);
    int overflow = 0;
    long long offset = PyLong_AsLongLongAndOverflow(args[5], &overflow);
    long long ts_delta = overflow ? 0 : PyLong_AsLongLongAndOverflow(args[6], &overflow);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(group);
    if (overflow || i < 0 || i > n || num_records < 0 || offset < 0 ||
        offset > INT32_MAX - MAX_BATCH_RECORDS) {
        Py_RETURN_NONE;
    }
    Py_ssize_t used = PyByteArray_GET_SIZE(buf), first = used, total = 0, largest = 0;
    Py_ssize_t j = i;
    /* pass 1: what fits, every part checked */
    for (; j < n && j - i < MAX_BATCH_RECORDS; j++) {
        Py_ssize_t size = body_size(PyList_GET_ITEM(group, j), ts_delta, offset + (j - i));
        if (size < 0) {
            Py_RETURN_NONE;
        }
        Py_ssize_t required = size + varint_size(size);
        if (required + used > batch_size && num_records + (j - i) > 0) {
            break;
        }
        used += required;
        total += required;
        if (required > largest) {
            largest = required;
        }
    }
    if (j > i) {
        if (PyByteArray_Resize(buf, first + total) < 0) {
            PyErr_Clear(); /* e.g. a view of it is held: the Python code says so itself */
            Py_RETURN_NONE;
        }
        char *at = PyByteArray_AS_STRING(buf) + first;
        for (Py_ssize_t k = i; k < j; k++) {
            PyObject *item = PyList_GET_ITEM(group, k);
            int64_t offset_delta = offset + (k - i);
            Py_ssize_t size = body_size(item, ts_delta, offset_delta);
            at = put_varint(at, size);
            at = put_body(at, item, ts_delta, offset_delta);
        }
    }
    return Py_BuildValue("(nn)", j - i, largest);
}

static PyMethodDef methods[] = {
    {"decode_batch", (PyCFunction)(void (*)(void))decode_batch, METH_FASTCALL,
     "The records of an uncompressed v2 batch body, or None to leave it to Python."},
    {"encode_records", (PyCFunction)(void (*)(void))encode_records, METH_FASTCALL,
     "Append records to a batch buffer: (appended, largest), or None to leave it to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "Kafka v2 records, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
