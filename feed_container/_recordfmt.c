/* feed_container._recordfmt: the tick encoder's per-row formatting loop in C.
 *
 * format_rows(literals, kinds, columns, rows) -> list[bytes]
 *
 *   literals: tuple of n + 1 bytes, the template's text around its n slots
 *   kinds:    bytes of n characters, one per slot: 'd' (int, decimal),
 *             'r' (float, repr), 's' (bytes, as is), 'p' (float, a wire price:
 *             at most seven decimals, written as repr writes it)
 *   columns:  tuple of n lists, one per slot, each at least `rows` long
 *
 * Row i is literals[0] + slot_0(columns[0][i]) + literals[1] + ... + literals[n],
 * byte for byte what ``template % row`` writes for the same bytes template
 * (``%d``, ``%r``, ``%s``; a 'p' slot as repr): the pure-Python path in
 * encoder.py, which the tests compare it with. A value of the wrong type raises TypeError; nothing
 * is returned half-built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int buffer_reserve(Buffer *buf, Py_ssize_t extra)
{
    if (buf->size + extra <= buf->capacity) {
        return 0;
    }
    Py_ssize_t wanted = buf->capacity * 2;
    if (wanted < buf->size + extra) {
        wanted = buf->size + extra;
    }
    char *grown = PyMem_Realloc(buf->data, (size_t)wanted);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = grown;
    buf->capacity = wanted;
    return 0;
}

static int buffer_append(Buffer *buf, const char *bytes, Py_ssize_t n)
{
    if (buffer_reserve(buf, n) < 0) {
        return -1;
    }
    memcpy(buf->data + buf->size, bytes, (size_t)n);
    buf->size += n;
    return 0;
}

/* Writes the decimal digits of `magnitude`, with a '-' before them if `negative`,
 * backwards so they end just before `end`; returns where they start. */
static char *write_decimal(char *end, unsigned long long magnitude, int negative)
{
    char *at = end;
    do {
        *--at = (char)('0' + (int)(magnitude % 10));
        magnitude /= 10;
    } while (magnitude != 0);
    if (negative) {
        *--at = '-';
    }
    return at;
}

static unsigned long long magnitude_of(long long v)
{
    return v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
}

/* Decimal text of a C long long, as %d writes it. */
static int append_int(Buffer *buf, PyObject *value)
{
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%%d slot needs an int, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow != 0) {
        /* Beyond 64 bits (never from a wire column): int's own decimal text, as %d
         * writes it (the base type's, so no Python code runs here). */
        PyObject *text = PyLong_Type.tp_repr(value);
        if (text == NULL) {
            return -1;
        }
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
        int rc = utf8 == NULL ? -1 : buffer_append(buf, utf8, n);
        Py_DECREF(text);
        return rc;
    }
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    char digits[24];
    char *end = digits + sizeof(digits);
    char *start = write_decimal(end, magnitude_of(v), v < 0);
    return buffer_append(buf, start, end - start);
}

/* repr() of a float, as %r (ascii()) writes it. */
static int append_float(Buffer *buf, PyObject *value)
{
    if (!PyFloat_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%%r slot needs a float, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), 'r', 0, Py_DTSF_ADD_DOT_0,
                                       NULL);
    if (text == NULL) {
        return -1;
    }
    int rc = buffer_append(buf, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return rc;
}

/* A wire price: an int32 over 100, 10,000 or 10,000,000 (every segment's divisor), so
 * at most seven decimals and ten significant digits. repr() of such a float is that
 * decimal, written shortest (trailing zeros dropped, at least one decimal: "7.0"),
 * because no shorter decimal lies within the float's half-ulp; so it is written from
 * rint(v * 1e7) (exact for these values) without repr's shortest-digits search.
 * Where repr would write something else, repr writes it: exponent notation below
 * 1e-4 (and far above any price), -0.0, nan, inf. */
#define PRICE_SCALE 10000000ULL
#define PRICE_DECIMALS 7

static int append_price(Buffer *buf, PyObject *value)
{
    if (!PyFloat_Check(value)) {
        PyErr_Format(PyExc_TypeError, "price slot needs a float, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double x = PyFloat_AS_DOUBLE(value);
    double scaled = nearbyint(x * (double)PRICE_SCALE);
    if (!(fabs(scaled) < 9.0e18) || (x != 0.0 && fabs(x) < 1e-4) ||
        (x == 0.0 && signbit(x))) {
        return append_float(buf, value);
    }
    long long units = (long long)scaled;
    unsigned long long magnitude = magnitude_of(units);
    unsigned long long fraction = magnitude % PRICE_SCALE;
    char text[40];
    char *point = text + 24; /* the integer part ends here, the fraction follows */
    char *start = write_decimal(point, magnitude / PRICE_SCALE, units < 0);
    char *end = point;
    *end++ = '.';
    char digits[PRICE_DECIMALS];
    for (int i = PRICE_DECIMALS - 1; i >= 0; i--) {
        digits[i] = (char)('0' + (int)(fraction % 10));
        fraction /= 10;
    }
    int keep = PRICE_DECIMALS;
    while (keep > 1 && digits[keep - 1] == '0') {
        keep--;
    }
    memcpy(end, digits, (size_t)keep);
    end += keep;
    return buffer_append(buf, start, end - start);
}

static int append_bytes(Buffer *buf, PyObject *value)
{
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%%s slot needs bytes, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    return buffer_append(buf, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
}

static PyObject *format_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "format_rows(literals, kinds, columns, rows)");
        return NULL;
    }
    PyObject *literals = args[0], *kinds = args[1], *columns = args[2];
    if (!PyTuple_Check(literals) || !PyBytes_Check(kinds) || !PyTuple_Check(columns)) {
        PyErr_SetString(PyExc_TypeError,
                        "literals must be a tuple, kinds bytes and columns a tuple");
        return NULL;
    }
    Py_ssize_t rows = PyLong_AsSsize_t(args[3]);
    if (rows == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t slots = PyBytes_GET_SIZE(kinds);
    const char *kind = PyBytes_AS_STRING(kinds);
    if (rows < 0 || PyTuple_GET_SIZE(literals) != slots + 1 ||
        PyTuple_GET_SIZE(columns) != slots) {
        PyErr_SetString(PyExc_ValueError,
                        "need rows >= 0, len(literals) == len(kinds) + 1 == len(columns) + 1");
        return NULL;
    }
    for (Py_ssize_t s = 0; s <= slots; s++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(literals, s))) {
            PyErr_SetString(PyExc_TypeError, "every literal must be bytes");
            return NULL;
        }
    }
    for (Py_ssize_t s = 0; s < slots; s++) {
        PyObject *column = PyTuple_GET_ITEM(columns, s);
        if (!PyList_Check(column) || PyList_GET_SIZE(column) < rows) {
            PyErr_Format(PyExc_ValueError, "column %zd must be a list of at least %zd values",
                         s, rows);
            return NULL;
        }
        if (kind[s] != 'd' && kind[s] != 'r' && kind[s] != 's' && kind[s] != 'p') {
            PyErr_Format(PyExc_ValueError, "unknown slot kind %c", kind[s]);
            return NULL;
        }
    }
    PyObject *out = PyList_New(rows);
    if (out == NULL) {
        return NULL;
    }
    Buffer buf = {PyMem_Malloc(2048), 0, 2048};
    if (buf.data == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t row = 0; row < rows; row++) {
        buf.size = 0;
        for (Py_ssize_t s = 0; s < slots; s++) {
            PyObject *literal = PyTuple_GET_ITEM(literals, s);
            if (buffer_append(&buf, PyBytes_AS_STRING(literal), PyBytes_GET_SIZE(literal)) < 0) {
                goto fail;
            }
            PyObject *column = PyTuple_GET_ITEM(columns, s);
            if (PyList_GET_SIZE(column) <= row) { /* shrunk meanwhile (a finalizer): refuse */
                PyErr_SetString(PyExc_ValueError, "a column changed size while formatting");
                goto fail;
            }
            PyObject *value = PyList_GET_ITEM(column, row);
            int rc;
            switch (kind[s]) {
            case 'd':
                rc = append_int(&buf, value);
                break;
            case 'r':
                rc = append_float(&buf, value);
                break;
            case 'p':
                rc = append_price(&buf, value);
                break;
            default:
                rc = append_bytes(&buf, value);
                break;
            }
            if (rc < 0) {
                goto fail;
            }
        }
        PyObject *last = PyTuple_GET_ITEM(literals, slots);
        if (buffer_append(&buf, PyBytes_AS_STRING(last), PyBytes_GET_SIZE(last)) < 0) {
            goto fail;
        }
        PyObject *record = PyBytes_FromStringAndSize(buf.data, buf.size);
        if (record == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(out, row, record);
    }
    PyMem_Free(buf.data);
    return out;
fail:
    PyMem_Free(buf.data);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"format_rows", (PyCFunction)(void (*)(void))format_rows, METH_FASTCALL,
     "format_rows(literals, kinds, columns, rows) -> list[bytes]: one record per row."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_recordfmt",
    .m_doc = "The tick encoder's per-row formatting loop in C (see feed_container/encoder.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__recordfmt(void)
{
    return PyModule_Create(&module);
}
