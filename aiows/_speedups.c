/*
 * aiows._speedups: the optional compiled half of aiows.frames.
 *
 * apply_mask(data, mask) -> bytes XORs a payload with a 4-byte WebSocket masking key
 * (RFC 6455 section 5.3). scan_frames(...) is the fast reader's loop over the plain
 * final text and binary frames at the front of a buffer. aiows.frames uses them when
 * they import and falls back to its pure-Python unmask and scan_python otherwise; the
 * two paths must give the same results for every input (tests/test_speedups.py).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* XOR `size` bytes of `src` with the key repeated, into `dst`. The key repeats every
 * 4 bytes, so a 64-bit word holding it twice lines up with every 8-byte step taken
 * from the start. memcpy keeps the word loads and stores legal at any alignment;
 * compilers turn it into plain (unaligned) moves. */
static void
xor_with_key(unsigned char *dst, const unsigned char *src, Py_ssize_t size,
             const unsigned char key[4])
{
    uint64_t word_key, word;
    Py_ssize_t done = 0;

    memcpy(&word_key, key, 4);
    memcpy((unsigned char *)&word_key + 4, key, 4);
    for (; done + 8 <= size; done += 8) {
        memcpy(&word, src + done, 8);
        word ^= word_key;
        memcpy(dst + done, &word, 8);
    }
    for (; done < size; done++) {
        dst[done] = src[done] ^ key[done & 3];
    }
}

/* A C-contiguous view of `data`; a strided memoryview is first copied into bytes,
 * as the pure-Python path copies it, so both accept the same inputs. On success
 * `*holder` owns a new reference (or NULL) to release with the view. */
static int
get_contiguous(PyObject *data, Py_buffer *view, PyObject **holder)
{
    *holder = NULL;
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) == 0) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_BufferError) || !PyMemoryView_Check(data)) {
        return -1;
    }
    PyErr_Clear();
    *holder = PyBytes_FromObject(data);
    if (*holder == NULL) {
        return -1;
    }
    if (PyObject_GetBuffer(*holder, view, PyBUF_SIMPLE) != 0) {
        Py_CLEAR(*holder);
        return -1;
    }
    return 0;
}

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *holder, *result = NULL;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes, not %zd", mask.len);
        goto release_mask;
    }
    if (get_contiguous(args[0], &data, &holder) != 0) {
        goto release_mask;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        xor_with_key((unsigned char *)PyBytes_AS_STRING(result),
                     (const unsigned char *)data.buf, data.len,
                     (const unsigned char *)mask.buf);
    }
    PyBuffer_Release(&data);
    Py_XDECREF(holder);
release_mask:
    PyBuffer_Release(&mask);
    return result;
}

/* Payloads of text frames up to this size are unmasked on the stack before decoding. */
#define STACK_PAYLOAD 4096

/* The message a complete frame carries: str for text (strict UTF-8; NULL with
 * UnicodeDecodeError set if it is not), bytes for binary. `key` is the frame's
 * masking key, or NULL for an unmasked frame. A new reference, or NULL on error. */
static PyObject *
frame_message(int text, const unsigned char *payload, Py_ssize_t size,
              const unsigned char *key)
{
    unsigned char small[STACK_PAYLOAD], *plain;
    PyObject *result;

    if (!text) {
        if (key == NULL) {
            return PyBytes_FromStringAndSize((const char *)payload, size);
        }
        result = PyBytes_FromStringAndSize(NULL, size);
        if (result != NULL) {
            xor_with_key((unsigned char *)PyBytes_AS_STRING(result), payload, size, key);
        }
        return result;
    }
    if (key == NULL) {
        return PyUnicode_DecodeUTF8((const char *)payload, size, NULL);
    }
    plain = size <= STACK_PAYLOAD ? small : PyMem_Malloc((size_t)size);
    if (plain == NULL) {
        return PyErr_NoMemory();
    }
    xor_with_key(plain, payload, size, key);
    result = PyUnicode_DecodeUTF8((const char *)plain, size, NULL);
    if (plain != small) {
        PyMem_Free(plain);
    }
    return result;
}

/* Read a frame's length (RFC 6455 section 5.2) at `at`, `avail` >= 2 bytes of
 * buffer. Returns the header's length before the masking key, 0 if the extended
 * length has not all arrived, or -1 if wsproto must judge the frame: a length not
 * in its shortest encoding or with its top bit set. */
static int
frame_length(const unsigned char *at, Py_ssize_t avail, uint64_t *length)
{
    int i;

    *length = at[1] & 0x7F;
    if (*length < 126) {
        return 2;
    }
    if (*length == 126) {
        if (avail < 4) {
            return 0;
        }
        *length = ((uint64_t)at[2] << 8) | at[3];
        return *length < 126 ? -1 : 4;
    }
    if (avail < 10) {
        return 0;
    }
    *length = 0;
    for (i = 2; i < 10; i++) {
        *length = (*length << 8) | at[i];
    }
    return *length < 65536 || *length >> 63 ? -1 : 10;
}

/* scan_frames(data, size, masked, limit, receive): see aiows.frames.scan_python,
 * whose results this gives for every input. The buffer stays exported while
 * receive runs, so data cannot be resized meanwhile. */
static PyObject *
scan_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    const unsigned char *buf, *at;
    Py_ssize_t size, pos = 0, start;
    long masked;
    long long limit;
    uint64_t length, need = 0;
    int header, overflow, hand_over = 0;
    PyObject *message, *result, *call[2];

    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "scan_frames() takes exactly 5 arguments (%zd given)", nargs);
        return NULL;
    }
    size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    masked = PyLong_AsLong(args[2]);
    if (masked == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* Lengths are below 2**63: a larger limit is none, a negative one refuses all. */
    limit = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow) {
        limit = overflow > 0 ? LLONG_MAX : -1;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) != 0) {
        return NULL;
    }
    if (size < 0 || size > view.len) {
        PyErr_Format(PyExc_ValueError, "size %zd outside the buffer's %zd bytes",
                     size, view.len);
        goto error;
    }
    buf = (const unsigned char *)view.buf;
    while (size - pos >= 2) {
        at = buf + pos;
        if ((at[0] != 0x81 && at[0] != 0x82) || (at[1] & 0x80) != masked) {
            hand_over = 1;
            break;
        }
        header = frame_length(at, size - pos, &length);
        if (header == 0) {
            break;
        }
        if (header < 0 || limit < 0 || length > (uint64_t)limit) {
            hand_over = 1;
            break;
        }
        start = pos + header + (masked ? 4 : 0);
        if (start > size || length > (uint64_t)(size - start)) {
            need = (uint64_t)(start - pos) + length; /* < 2**64: length < 2**63 */
            break;
        }
        message = frame_message(at[0] == 0x81, buf + start, (Py_ssize_t)length,
                                masked ? buf + start - 4 : NULL);
        if (message == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                goto error;
            }
            PyErr_Clear(); /* wsproto fails the frame with 1007 */
            hand_over = 1;
            break;
        }
        call[0] = message;
        call[1] = Py_True;
        result = PyObject_Vectorcall(args[4], call, 2, NULL);
        Py_DECREF(message);
        if (result == NULL) {
            goto error;
        }
        Py_DECREF(result);
        pos = start + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    if (hand_over) {
        return Py_BuildValue("(ni)", pos, -1);
    }
    return Py_BuildValue("(nK)", pos, (unsigned long long)need);
error:
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, /)\n--\n\n"
     "Return data XORed with the 4-byte masking key mask, as bytes."},
    {"scan_frames", (PyCFunction)(void (*)(void))scan_frames, METH_FASTCALL,
     "scan_frames(data, size, masked, limit, receive, /)\n--\n\n"
     "Deliver the plain final data frames complete in data[:size] as\n"
     "receive(message, True); return (position, need) as aiows.frames.scan_python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "aiows._speedups",
    "Compiled helpers for aiows.frames (optional; pure Python is the fallback).",
    0,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
