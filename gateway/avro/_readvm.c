/* Avro binary reading, compiled: a reader built from a program of nested tuples, which
 * gateway/avro/reader.py makes from a writer schema (see _program there). The generated Python
 * reader stays the reference: reader.py uses this one only after it read a probe exactly as
 * the Python one did, and the tests compare the two on random and malformed records.
 *
 * Every read is bounds-checked against the buffer's end. The failures are the Python
 * reader's, raised as the same types: the reader-error class given at construction with the
 * same reasons ("truncated", "negative_length", "bad_index", "bad_boolean",
 * "varint_too_long"), IndexError for a number cut off by the end, struct.error (given) for a
 * float or double cut off, UnicodeDecodeError for a string that is not UTF-8.
 *
 * Program nodes: (op,) or (op, argument): NULL, BOOLEAN, LONG (int and long), FLOAT, DOUBLE,
 * STRING, BYTES; (FIXED, size); (ENUM, symbols); (UNION, branches); (RECORD, names, fields);
 * (ARRAY, item). It holds the interpreter lock throughout. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { OP_NULL, OP_BOOLEAN, OP_LONG, OP_FLOAT, OP_DOUBLE, OP_STRING, OP_BYTES, OP_FIXED,
       OP_ENUM, OP_UNION, OP_RECORD, OP_ARRAY, OP_COUNT };

#define MAX_DEPTH 64

typedef struct Node {
    int op;
    Py_ssize_t size;    /* FIXED: its size; ENUM: the number of symbols */
    PyObject *names;    /* RECORD: the field names (a tuple of str); ENUM: the symbols */
    struct Node *kids;  /* UNION: the branches; RECORD: the fields; ARRAY: the item */
    Py_ssize_t nkids;
} Node;

typedef struct {
    PyObject_HEAD
    Node root;
    PyObject *read_error;   /* the reader's error class: read_error(reason) */
    PyObject *struct_error; /* struct.error */
} ReaderObject;

typedef struct {
    const unsigned char *b;
    Py_ssize_t end;
    Py_ssize_t p;
    ReaderObject *self;
} Cursor;

/* A zig-zag varint as the Python reader reads it: up to ten bytes, the tenth without its
 * continuation bit; a value beyond 64 bits is a Python int (*big), never an error. */
typedef struct {
    int64_t v;
    PyObject *big; /* new reference when the value does not fit in 64 bits */
    int negative;  /* the value is below zero (set for big ones too) */
} Long;

static void node_clear(Node *n) {
    Py_CLEAR(n->names);
    if (n->kids != NULL) {
        for (Py_ssize_t i = 0; i < n->nkids; i++) {
            node_clear(&n->kids[i]);
        }
        PyMem_Free(n->kids);
        n->kids = NULL;
    }
    n->nkids = 0;
}

static int fail(Cursor *c, const char *reason) {
    PyObject *exc = PyObject_CallFunction(c->self->read_error, "s", reason);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}

static int cut_off(void) {
    PyErr_SetString(PyExc_IndexError, "index out of range");
    return -1;
}

static int read_long(Cursor *c, Long *out) {
    uint64_t acc = 0;
    out->big = NULL;
    out->negative = 0;
    for (int i = 0; i < 10; i++) {
        if (c->p >= c->end) {
            return cut_off();
        }
        unsigned int n = c->b[c->p++];
        if (i < 9) {
            acc |= (uint64_t)(n & 0x7F) << (7 * i);
        }
        if (n < 0x80) {
            if (i < 9 || (n & 0x7F) <= 1) {
                if (i == 9) {
                    acc |= (uint64_t)(n & 0x7F) << 63;
                }
                out->v = (int64_t)((acc >> 1) ^ (~(acc & 1) + 1));
                out->negative = out->v < 0;
                return 0;
            }
            /* bits 63-69: the Python int (acc >> 1) ^ -(acc & 1) */
            PyObject *high = PyLong_FromUnsignedLongLong((unsigned long long)(n & 0x7F));
            PyObject *shift = PyLong_FromLong(62);
            PyObject *low = PyLong_FromUnsignedLongLong((unsigned long long)(acc >> 1));
            PyObject *shifted = NULL, *value = NULL;
            if (high != NULL && shift != NULL && low != NULL) {
                shifted = PyNumber_Lshift(high, shift);
            }
            if (shifted != NULL) {
                value = PyNumber_Or(shifted, low);
            }
            if (value != NULL && (acc & 1)) {
                PyObject *inverted = PyNumber_Invert(value);
                Py_DECREF(value);
                value = inverted;
            }
            Py_XDECREF(high);
            Py_XDECREF(shift);
            Py_XDECREF(low);
            Py_XDECREF(shifted);
            if (value == NULL) {
                return -1;
            }
            out->big = value;
            out->negative = (int)(acc & 1); /* odd: ~x of a positive x */
            return 0;
        }
    }
    return fail(c, "varint_too_long");
}

/* A length, index or count: *negative says a value below zero (big ones included). */
static int read_small(Cursor *c, int64_t *v, int *big, int *negative) {
    Long l;
    if (read_long(c, &l) < 0) {
        return -1;
    }
    *big = l.big != NULL;
    *negative = l.negative;
    *v = l.v;
    Py_XDECREF(l.big);
    return 0;
}

static PyObject *read_node(Cursor *c, const Node *n);

static PyObject *read_sized(Cursor *c, int string) {
    int64_t size;
    int big, negative;
    if (read_small(c, &size, &big, &negative) < 0) {
        return NULL;
    }
    if (negative) {
        fail(c, "negative_length");
        return NULL;
    }
    if (big || size > c->end - c->p) {
        fail(c, "truncated");
        return NULL;
    }
    const char *at = (const char *)c->b + c->p;
    c->p += (Py_ssize_t)size;
    if (string) {
        return PyUnicode_DecodeUTF8(at, (Py_ssize_t)size, NULL);
    }
    return PyBytes_FromStringAndSize(at, (Py_ssize_t)size);
}

static PyObject *read_index(Cursor *c, Py_ssize_t count, Py_ssize_t *index) {
    int64_t v;
    int big, negative;
    if (read_small(c, &v, &big, &negative) < 0) {
        return NULL;
    }
    if (big || negative || v >= (int64_t)count) {
        fail(c, "bad_index");
        return NULL;
    }
    *index = (Py_ssize_t)v;
    return Py_None; /* borrowed: success */
}

static PyObject *read_array(Cursor *c, const Node *item) {
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    for (;;) {
        int64_t count, ignored;
        int big, negative, big2, negative2;
        if (read_small(c, &count, &big, &negative) < 0) {
            goto error;
        }
        if (!big && count == 0) {
            break;
        }
        if (negative) {
            /* a negative count: its block's byte size follows (read, not used) */
            if (read_small(c, &ignored, &big2, &negative2) < 0) {
                goto error;
            }
            if (!big && count != INT64_MIN) {
                count = -count;
            } else {
                big = 1;
            }
        }
        if (big || count > c->end - c->p) {
            fail(c, "truncated");
            goto error;
        }
        for (int64_t k = 0; k < count; k++) {
            PyObject *value = read_node(c, item);
            if (value == NULL) {
                goto error;
            }
            int rc = PyList_Append(out, value);
            Py_DECREF(value);
            if (rc < 0) {
                goto error;
            }
        }
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static PyObject *read_node(Cursor *c, const Node *n) {
    switch (n->op) {
    case OP_NULL:
        Py_RETURN_NONE;
    case OP_BOOLEAN: {
        if (c->p >= c->end) {
            cut_off();
            return NULL;
        }
        unsigned int v = c->b[c->p];
        if (v > 1) {
            fail(c, "bad_boolean");
            return NULL;
        }
        c->p++;
        return PyBool_FromLong((long)v);
    }
    case OP_LONG: {
        Long l;
        if (read_long(c, &l) < 0) {
            return NULL;
        }
        return l.big != NULL ? l.big : PyLong_FromLongLong((long long)l.v);
    }
    case OP_FLOAT:
    case OP_DOUBLE: {
        Py_ssize_t width = n->op == OP_FLOAT ? 4 : 8;
        if (width > c->end - c->p) {
            PyErr_SetString(c->self->struct_error, "unpack_from requires a buffer of more bytes");
            return NULL;
        }
        const char *at = (const char *)c->b + c->p;
        double v = width == 4 ? PyFloat_Unpack4(at, 1) : PyFloat_Unpack8(at, 1);
        if (v == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        c->p += width;
        return PyFloat_FromDouble(v);
    }
    case OP_STRING:
        return read_sized(c, 1);
    case OP_BYTES:
        return read_sized(c, 0);
    case OP_FIXED: {
        if (n->size > c->end - c->p) {
            fail(c, "truncated");
            return NULL;
        }
        PyObject *v = PyBytes_FromStringAndSize((const char *)c->b + c->p, n->size);
        c->p += n->size;
        return v;
    }
    case OP_ENUM: {
        Py_ssize_t i;
        if (read_index(c, n->size, &i) == NULL) {
            return NULL;
        }
        PyObject *v = PyTuple_GET_ITEM(n->names, i);
        Py_INCREF(v);
        return v;
    }
    case OP_UNION: {
        Py_ssize_t i;
        if (read_index(c, n->nkids, &i) == NULL) {
            return NULL;
        }
        return read_node(c, &n->kids[i]);
    }
    case OP_RECORD: {
#if PY_VERSION_HEX < 0x030D0000
        PyObject *out = _PyDict_NewPresized(n->nkids);
#else
        PyObject *out = PyDict_New();
#endif
        if (out == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n->nkids; i++) {
            PyObject *value = read_node(c, &n->kids[i]);
            if (value == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            int rc = PyDict_SetItem(out, PyTuple_GET_ITEM(n->names, i), value);
            Py_DECREF(value);
            if (rc < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    case OP_ARRAY:
        return read_array(c, &n->kids[0]);
    default:
        PyErr_SetString(PyExc_SystemError, "bad program node");
        return NULL;
    }
}

/* --- building the program ------------------------------------------------------------------ */

static int bad_program(const char *what) {
    PyErr_Format(PyExc_ValueError, "bad reader program: %s", what);
    return -1;
}

static int build(Node *n, PyObject *spec, int depth);

static int build_kids(Node *n, PyObject *seq, int depth) {
    if (!PyTuple_Check(seq)) {
        return bad_program("children are not a tuple");
    }
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    n->kids = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(Node));
    if (n->kids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    n->nkids = count;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (build(&n->kids[i], PyTuple_GET_ITEM(seq, i), depth + 1) < 0) {
            return -1;
        }
    }
    return 0;
}

static int all_str(PyObject *t) {
    if (!PyTuple_Check(t)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(t, i))) {
            return 0;
        }
    }
    return 1;
}

static int build(Node *n, PyObject *spec, int depth) {
    if (depth > MAX_DEPTH) {
        return bad_program("nested too deep");
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1) {
        return bad_program("a node is not a non-empty tuple");
    }
    long op = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (op == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (op < 0 || op >= OP_COUNT) {
        return bad_program("unknown op");
    }
    n->op = (int)op;
    Py_ssize_t arity = PyTuple_GET_SIZE(spec);
    switch (op) {
    case OP_FIXED: {
        if (arity != 2) {
            return bad_program("fixed takes a size");
        }
        n->size = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
        if (n->size == -1 && PyErr_Occurred()) {
            return -1;
        }
        return n->size < 0 ? bad_program("negative fixed size") : 0;
    }
    case OP_ENUM: {
        PyObject *symbols = arity == 2 ? PyTuple_GET_ITEM(spec, 1) : NULL;
        if (symbols == NULL || !all_str(symbols)) {
            return bad_program("enum takes a tuple of symbols");
        }
        Py_INCREF(symbols);
        n->names = symbols;
        n->size = PyTuple_GET_SIZE(symbols);
        return 0;
    }
    case OP_UNION:
        if (arity != 2) {
            return bad_program("union takes its branches");
        }
        return build_kids(n, PyTuple_GET_ITEM(spec, 1), depth);
    case OP_RECORD: {
        PyObject *names = arity == 3 ? PyTuple_GET_ITEM(spec, 1) : NULL;
        if (names == NULL || !all_str(names)) {
            return bad_program("record takes a tuple of field names and one of fields");
        }
        if (build_kids(n, PyTuple_GET_ITEM(spec, 2), depth) < 0) {
            return -1;
        }
        if (n->nkids != PyTuple_GET_SIZE(names)) {
            return bad_program("record names and fields differ in number");
        }
        Py_INCREF(names);
        n->names = names;
        return 0;
    }
    case OP_ARRAY: {
        if (arity != 2) {
            return bad_program("array takes its item");
        }
        PyObject *one = PyTuple_Pack(1, PyTuple_GET_ITEM(spec, 1));
        if (one == NULL) {
            return -1;
        }
        int rc = build_kids(n, one, depth);
        Py_DECREF(one);
        return rc;
    }
    default:
        return arity == 1 ? 0 : bad_program("a primitive takes no argument");
    }
}

/* --- the Reader type ------------------------------------------------------------------------ */

static int reader_init(ReaderObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"program", "read_error", "struct_error", NULL};
    PyObject *program, *read_error, *struct_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:Reader", keywords, &program, &read_error,
                                     &struct_error)) {
        return -1;
    }
    if (!PyExceptionClass_Check(read_error) || !PyExceptionClass_Check(struct_error)) {
        PyErr_SetString(PyExc_TypeError, "read_error and struct_error must be exception classes");
        return -1;
    }
    node_clear(&self->root);
    Py_CLEAR(self->read_error);
    Py_CLEAR(self->struct_error);
    if (build(&self->root, program, 0) < 0) {
        node_clear(&self->root);
        return -1;
    }
    Py_INCREF(read_error);
    self->read_error = read_error;
    Py_INCREF(struct_error);
    self->struct_error = struct_error;
    return 0;
}

static void reader_dealloc(ReaderObject *self) {
    node_clear(&self->root);
    Py_CLEAR(self->read_error);
    Py_CLEAR(self->struct_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *reader_call(ReaderObject *self, PyObject *args, PyObject *kwargs) {
    PyObject *data;
    Py_ssize_t start;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "a reader takes (buffer, start)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "On:read", &data, &start)) {
        return NULL;
    }
    if (self->read_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "reader not initialised");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "a reader reads bytes");
        return NULL;
    }
    Cursor c = {(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), start,
                self};
    if (start < 0) {
        cut_off();
        return NULL;
    }
    PyObject *record = read_node(&c, &self->root);
    if (record == NULL) {
        return NULL;
    }
    PyObject *end = PyLong_FromSsize_t(c.p);
    if (end == NULL) {
        Py_DECREF(record);
        return NULL;
    }
    PyObject *out = PyTuple_Pack(2, record, end);
    Py_DECREF(record);
    Py_DECREF(end);
    return out;
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.avro._readvm.Reader",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reader(program, read_error, struct_error): reader(buffer, start) -> (record, end)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_call = (ternaryfunc)reader_call,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_readvm", "Avro binary reading from a compiled program.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__readvm(void) {
    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    static const char *names[OP_COUNT] = {"NULL",   "BOOLEAN", "LONG",  "FLOAT",
                                          "DOUBLE", "STRING",  "BYTES", "FIXED",
                                          "ENUM",   "UNION",   "RECORD", "ARRAY"};
    for (int i = 0; i < OP_COUNT; i++) {
        if (PyModule_AddIntConstant(m, names[i], i) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
