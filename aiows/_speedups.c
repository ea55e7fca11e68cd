/*
 * aiows._speedups: the optional compiled half of aiows.frames.
 *
 * apply_mask(data, mask) -> bytes XORs a payload with a 4-byte WebSocket masking key
 * (RFC 6455 section 5.3). aiows.frames uses it when it imports and falls back to its
 * pure-Python unmask otherwise; both must give the same bytes for every input.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask, /)\n--\n\n"
     "Return data XORed with the 4-byte masking key mask, as bytes."},
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
