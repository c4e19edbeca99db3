/*
 * What sfu/_native.c (the forwarding loop) and sfu/_ingress.c (the publisher's
 * steady-state ingress) share: one incoming packet as the loop reads it, and the
 * loop's entry for one forwarder. Both files build the one extension sfu._native.
 */
#ifndef PARLEY_NATIVE_H
#define PARLEY_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    const unsigned char *data;
    Py_ssize_t data_len;
    long long seq, timestamp, ssrc, marker, payload_start, payload_end, audio_level;
    unsigned char ast[3];
    char has_ast;
    /* VP8 descriptor (has_vp8: vp8 is not None) */
    char has_vp8;
    char vp8_full; /* the fields below picture_id / tl0picidx are loaded */
    long long picture_id, tl0picidx, picture_id_bits, tid_byte, tk_flags, size, non_reference,
        start, partition_id;
} Incoming;

/* Shared between the two files only: not exported from the extension. */
#define PARLEY_INTERNAL __attribute__((visibility("hidden")))

/* sfu/_native.c: forward `in` (every field loaded, vp8_full set when has_vp8) to one
 * forwarder natively when it is a ForwarderCore in its steady state. 1: handled, 0: not
 * (call Forwarder.forward), -1: a Python error. */
PARLEY_INTERNAL int native_forward_incoming(PyObject *forwarder, PyObject *source, Incoming *in, double now);

/* sfu/_ingress.c: add its types to the module; -1 with an exception on failure. */
PARLEY_INTERNAL int ingress_add_types(PyObject *module);

/* sfu/_feedback.c: add FeedbackPath to the module; -1 with an exception on failure. */
PARLEY_INTERNAL int feedback_add_types(PyObject *module);

#endif
