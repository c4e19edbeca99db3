/*
 * sfu._native: the per-forwarded-packet loop in C.
 *
 * What it does is exactly what the Python path in sfu/forwarder.py does for a
 * forwarder in its steady state (sending the layer it is on, no switch pending,
 * no frame being dropped, no pacer queue): rewrite the RTP header (SSRC, sequence
 * number, timestamp, payload type), rebuild the subscriber leg's header-extension
 * block (MID, audio level, abs-send-time), rewrite the VP8 picture id / TL0PICIDX
 * when the mapping needs it, protect with libsrtp and sendto() the subscriber,
 * then update the forwarder's and rewriter's state. Anything else (switches,
 * keyframe gating, late packets, dropped frames, pacing) goes to the Python
 * method Forwarder.forward, so there is one behaviour, with two speeds. The
 * differential tests in tests/unit/test_native.py hold the two to the same output.
 *
 * Types:
 *   Egress        one subscriber transport: socket fd, remote address, libsrtp
 *                 session and srtp_protect (addresses handed over by the adapter,
 *                 sfu/aiortc_adapter.py, which owns every private-API use).
 *   RewriterCore  base class of sfu.rtp.rewrite.StreamRewriter: its hot fields.
 *   ForwarderCore base class of sfu.forwarder.Forwarder: its hot fields.
 *   SendBatch     between begin() and flush(), the Egresses that point to it (their
 *                 `batch`) queue what they protect and flush() sends each one's queue
 *                 with one sendmmsg (the batch reader of sfu/aiortc_adapter/media_port.py).
 * Function:
 *   fanout(source, pkt, vp8, now, forwarders)
 *
 * Everything runs on the event loop's thread with the GIL held; no global state
 * besides interned attribute names.
 */
#include "_native.h" /* Python.h, Incoming (shared with sfu/_ingress.c) */
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Same limits as the Python path (srtp_transform): room for libsrtp's trailer. */
#define PLAIN_LIMIT (1500 - 144)
#define BUFFER_SIZE 1600

typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static PyObject *s_data, *s_seq, *s_timestamp, *s_ssrc, *s_marker, *s_payload_start,
    *s_payload_end, *s_audio_level, *s_abs_send_time, *s_picture_id, *s_picture_id_bits,
    *s_tl0picidx, *s_tid_byte, *s_tk_flags, *s_size, *s_non_reference, *s_start,
    *s_partition_id, *s_idle, *s_forward;

static inline long long seq_diff(long long a, long long b, int bits)
{
    long long half = 1LL << (bits - 1);
    long long mask = (1LL << bits) - 1;
    return ((a - b + half) & mask) - half;
}

static inline void put16(unsigned char *p, long long v)
{
    p[0] = (unsigned char)((v >> 8) & 0xFF);
    p[1] = (unsigned char)(v & 0xFF);
}

/* --------------------------------------------------------------- SendBatch */

/* An Egress queues at most this many datagrams while its batch is open; a full queue is
 * sent at once (one sendmmsg) and starts again. */
#define QUEUE_SLOTS 32

typedef struct {
    PyObject_HEAD
    int depth;            /* begin() calls not yet matched by flush() */
    Py_ssize_t count;     /* Egresses with queued datagrams */
    Py_ssize_t capacity;
    PyObject **pending;   /* those Egresses (strong references), in order of first queueing */
    long long syscalls;   /* sendmmsg calls that sent at least one datagram */
    long long datagrams;  /* datagrams they sent */
} SendBatchObject;

static PyTypeObject SendBatchType;

/* ------------------------------------------------------------------ Egress */

/* Transport-wide sequence numbers (transport-cc): the send history, a ring of 24-byte
 * entries whose size is a power of two. It starts at TWCC_RING_MIN entries when twcc_id
 * is first set and doubles, up to TWCC_RING, whenever the entry a packet would overwrite
 * was sent less than TWCC_SPAN seconds ago: it holds at least TWCC_SPAN s of the
 * subscriber's packets (or the last TWCC_RING), sized by the rate (24 kB at 500
 * packets/s, not 393 kB for every subscriber). */
#define TWCC_RING 16384
#define TWCC_RING_MIN 1024
#define TWCC_SPAN 2.0

typedef struct {
    long long seq; /* unwrapped transport-wide sequence number, -1: empty */
    double sent;   /* CLOCK_MONOTONIC seconds */
    long long size;
} TwccEntry;

typedef struct {
    PyObject_HEAD
    int fd;
    char closed;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    void *srtp;
    srtp_protect_fn protect;
    PyObject *keep; /* the socket and the libsrtp session: kept alive */
    long long tx_packets;
    long long tx_errors;
    int twcc_id;         /* the transport-cc extension id, 0: off */
    long long twcc_next; /* the next unwrapped transport-wide sequence number */
    TwccEntry *twcc_ring;
    long long twcc_size; /* entries in twcc_ring (a power of two), 0 without one */
    PyObject *batch;     /* a SendBatch (or None): queue while it is open */
    unsigned char *queue; /* QUEUE_SLOTS * BUFFER_SIZE protected datagrams, allocated lazily */
    int queue_len[QUEUE_SLOTS];
    int queued;
    char registered; /* in its batch's pending list */
} EgressObject;

static int egress_traverse(EgressObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    Py_VISIT(self->batch);
    return 0;
}

static int egress_clear(EgressObject *self)
{
    Py_CLEAR(self->keep);
    Py_CLEAR(self->batch);
    return 0;
}

static void egress_dealloc(EgressObject *self)
{
    PyObject_GC_UnTrack(self);
    egress_clear(self);
    PyMem_Free(self->queue);
    self->queue = NULL;
    PyMem_Free(self->twcc_ring);
    self->twcc_ring = NULL;
    self->twcc_size = 0;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int egress_init(EgressObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sock", "address", "srtp_context", "srtp_protect", "keep", NULL};
    PyObject *sock, *address, *keep = Py_None;
    unsigned long long ctx, fn;
    const char *host;
    int port;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOKK|O", kwlist, &sock, &address, &ctx, &fn,
                                     &keep))
        return -1;
    if (!PyTuple_Check(address) || PyTuple_GET_SIZE(address) < 2) {
        PyErr_SetString(PyExc_ValueError, "address must be a (host, port) tuple");
        return -1;
    }
    PyObject *host_obj = PyTuple_GET_ITEM(address, 0);
    if (!PyUnicode_Check(host_obj)) {
        PyErr_SetString(PyExc_TypeError, "the address's host must be a str");
        return -1;
    }
    host = PyUnicode_AsUTF8(host_obj);
    if (host == NULL)
        return -1;
    port = (int)PyLong_AsLong(PyTuple_GET_ITEM(address, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    if (!ctx || !fn) {
        PyErr_SetString(PyExc_ValueError, "srtp_context and srtp_protect must be non-null");
        return -1;
    }
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return -1;
    memset(&self->addr, 0, sizeof(self->addr));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&self->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&self->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        self->addrlen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        self->addrlen = sizeof(*v6);
    } else {
        PyErr_Format(PyExc_ValueError, "not an IP address: %s", host);
        return -1;
    }
    self->fd = fd;
    self->srtp = (void *)(uintptr_t)ctx;
    self->protect = (srtp_protect_fn)(uintptr_t)fn;
    self->closed = 0;
    PyObject *pair = PyTuple_Pack(2, sock, keep);
    if (pair == NULL)
        return -1;
    Py_XSETREF(self->keep, pair);
    return 0;
}

/* The packet's first header extension element is the transport-cc placeholder:
 * X bit set, no CSRC, a one-byte-header block (0xBEDE) whose first element is
 * (twcc_id << 4) | 1. Nothing else is looked at (the forwarder puts it first). */
static inline int twcc_slot(const EgressObject *self, const unsigned char *buf, int len)
{
    return len >= 20 && (buf[0] & 0x1F) == 0x10 && buf[12] == 0xBE && buf[13] == 0xDE &&
           (buf[14] | buf[15]) != 0 && buf[16] == (unsigned char)((self->twcc_id << 4) | 1);
}

/* Double the send history (up to TWCC_RING), keeping every entry; on failure the
 * history stays as it was. */
static void twcc_grow(EgressObject *self)
{
    long long size = self->twcc_size * 2;
    TwccEntry *ring = PyMem_Malloc(sizeof(TwccEntry) * (size_t)size);
    if (ring == NULL)
        return;
    for (long long i = 0; i < size; i++)
        ring[i].seq = -1;
    for (long long i = 0; i < self->twcc_size; i++) {
        const TwccEntry *e = &self->twcc_ring[i];
        if (e->seq >= 0)
            ring[e->seq & (size - 1)] = *e;
    }
    PyMem_Free(self->twcc_ring);
    self->twcc_ring = ring;
    self->twcc_size = size;
}

/* Send the queued datagrams, in order, with as few sendmmsg calls as the kernel allows:
 * after a partial send the rest is tried again; a datagram the kernel refuses (EAGAIN: a
 * full socket buffer, or any other error) is dropped and counted in tx_errors, as sendto
 * would have it, and the ones after it are still tried. */
static void egress_flush(EgressObject *self, SendBatchObject *batch)
{
    int total = self->queued;
    self->queued = 0;
    if (total == 0)
        return;
    if (self->closed || self->fd < 0) {
        self->tx_errors += total;
        return;
    }
    if (total == 1) { /* one datagram: sendto costs less than a sendmmsg of one */
        ssize_t r;
        do {
            r = sendto(self->fd, self->queue, (size_t)self->queue_len[0], MSG_DONTWAIT,
                       (struct sockaddr *)&self->addr, self->addrlen);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            self->tx_errors++;
        } else {
            self->tx_packets++;
            if (batch != NULL) {
                batch->syscalls++;
                batch->datagrams++;
            }
        }
        return;
    }
    struct mmsghdr msgs[QUEUE_SLOTS];
    struct iovec iov[QUEUE_SLOTS];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)total);
    for (int i = 0; i < total; i++) {
        iov[i].iov_base = self->queue + (size_t)i * BUFFER_SIZE;
        iov[i].iov_len = (size_t)self->queue_len[i];
        msgs[i].msg_hdr.msg_name = &self->addr;
        msgs[i].msg_hdr.msg_namelen = self->addrlen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int done = 0;
    while (done < total) {
        int r = sendmmsg(self->fd, msgs + done, (unsigned int)(total - done), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            self->tx_errors++; /* this one is dropped; the next ones are still tried */
            done++;
            continue;
        }
        self->tx_packets += r;
        done += r;
        if (batch != NULL && r > 0) {
            batch->syscalls++;
            batch->datagrams += r;
        }
    }
}

/* Queue a protected datagram `copies` times in the open batch. 0: not queued (no memory):
 * the caller sends it at once. */
static int egress_enqueue(EgressObject *self, const unsigned char *buf, int n, int copies)
{
    SendBatchObject *batch = (SendBatchObject *)self->batch;
    if (self->queue == NULL) {
        self->queue = PyMem_Malloc((size_t)QUEUE_SLOTS * BUFFER_SIZE);
        if (self->queue == NULL)
            return 0;
    }
    if (!self->registered) {
        if (batch->count == batch->capacity) {
            Py_ssize_t capacity = batch->capacity ? batch->capacity * 2 : 16;
            PyObject **grown = PyMem_Realloc(batch->pending, sizeof(PyObject *) * (size_t)capacity);
            if (grown == NULL)
                return 0;
            batch->pending = grown;
            batch->capacity = capacity;
        }
        Py_INCREF(self);
        batch->pending[batch->count++] = (PyObject *)self;
        self->registered = 1;
    }
    for (int i = 0; i < copies; i++) {
        if (self->queued == QUEUE_SLOTS)
            egress_flush(self, batch);
        memcpy(self->queue + (size_t)self->queued * BUFFER_SIZE, buf, (size_t)n);
        self->queue_len[self->queued++] = n;
    }
    return 1;
}

/* Protect buf[0:len] in place and send it `copies` times. 1: sent, 0: failed (counted).
 * With twcc_id set and the placeholder there, the packet gets the next transport-wide
 * sequence number (one for all its copies) and its send time and size are recorded:
 * also when sendto then fails (a full socket buffer drops it as the link would; the
 * feedback reports it lost), not when protect fails (nothing left). */
static int egress_emit(EgressObject *self, unsigned char *buf, int len, int copies)
{
    if (self->closed || len > PLAIN_LIMIT) {
        self->tx_errors++;
        return 0;
    }
    int stamped = 0;
    if (self->twcc_id && self->twcc_ring != NULL && twcc_slot(self, buf, len)) {
        put16(buf + 17, self->twcc_next);
        stamped = 1;
    }
    int n = len;
    if (self->protect(self->srtp, buf, &n) != 0) {
        self->tx_errors++;
        return 0;
    }
    if (stamped) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        TwccEntry *e = &self->twcc_ring[self->twcc_next & (self->twcc_size - 1)];
        if (e->seq >= 0 && now - e->sent < TWCC_SPAN && self->twcc_size < TWCC_RING) {
            twcc_grow(self);
            e = &self->twcc_ring[self->twcc_next & (self->twcc_size - 1)];
        }
        e->seq = self->twcc_next;
        e->sent = now;
        e->size = len;
        self->twcc_next++;
    }
    if (self->batch != NULL && Py_IS_TYPE(self->batch, &SendBatchType) &&
        ((SendBatchObject *)self->batch)->depth > 0 && egress_enqueue(self, buf, n, copies))
        return 1; /* sent (or dropped and counted) when the batch is flushed */
    for (int i = 0; i < copies; i++) {
        ssize_t r;
        do {
            r = sendto(self->fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&self->addr,
                       self->addrlen);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            self->tx_errors++;
            return 0;
        }
    }
    self->tx_packets += copies;
    return 1;
}

static PyObject *egress_send_copies(EgressObject *self, PyObject *arg, int copies)
{
    Py_buffer view;
    unsigned char buf[BUFFER_SIZE];
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int len = view.len > PLAIN_LIMIT ? PLAIN_LIMIT + 1 : (int)view.len;
    if (len <= PLAIN_LIMIT)
        memcpy(buf, view.buf, (size_t)len);
    int ok = egress_emit(self, buf, len, copies); /* refuses (and counts) a longer one */
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyObject *egress_send(EgressObject *self, PyObject *arg)
{
    return egress_send_copies(self, arg, 1);
}

static PyObject *egress_send_twice(EgressObject *self, PyObject *arg)
{
    return egress_send_copies(self, arg, 2);
}

static PyObject *egress_close(EgressObject *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    self->fd = -1;
    self->tx_errors += self->queued; /* never sent */
    self->queued = 0;
    Py_CLEAR(self->keep);
    PyMem_Free(self->twcc_ring); /* nothing is sent any more: no feedback to join */
    self->twcc_ring = NULL;
    self->twcc_size = 0;
    Py_RETURN_NONE;
}

static PyObject *egress_history(EgressObject *self, PyObject *arg)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v < 0 || v > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "history(seq16): seq16 is 0..65535");
        return NULL;
    }
    if (self->twcc_ring == NULL)
        Py_RETURN_NONE;
    const TwccEntry *e = &self->twcc_ring[v & (self->twcc_size - 1)];
    if (e->seq < 0 || (e->seq & 0xFFFF) != v || e->seq >= self->twcc_next ||
        e->seq < self->twcc_next - self->twcc_size)
        Py_RETURN_NONE;
    return Py_BuildValue("(LdL)", e->seq, e->sent, e->size);
}

static PyObject *egress_get_twcc_id(EgressObject *self, void *closure)
{
    return PyLong_FromLong(self->twcc_id);
}

static int egress_set_twcc_id(EgressObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "twcc_id cannot be deleted");
        return -1;
    }
    long id = PyLong_AsLong(value);
    if (id == -1 && PyErr_Occurred())
        return -1;
    if (id < 0 || id > 14) {
        PyErr_SetString(PyExc_ValueError, "twcc_id is 0 (off) or a one-byte extension id 1..14");
        return -1;
    }
    if (id && self->twcc_ring == NULL && !self->closed) {
        self->twcc_ring = PyMem_Malloc(sizeof(TwccEntry) * TWCC_RING_MIN);
        if (self->twcc_ring == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (int i = 0; i < TWCC_RING_MIN; i++)
            self->twcc_ring[i].seq = -1;
        self->twcc_size = TWCC_RING_MIN;
    }
    self->twcc_id = (int)id;
    return 0;
}

static PyGetSetDef egress_getset[] = {
    {"twcc_id", (getter)egress_get_twcc_id, (setter)egress_set_twcc_id,
     "transport-cc header extension id (0: off): packets carrying its placeholder first "
     "get a transport-wide sequence number", NULL},
    {NULL},
};

static PyMethodDef egress_methods[] = {
    {"send", (PyCFunction)egress_send, METH_O,
     "Protect one RTP packet and send it; False when it could not be (counted in tx_errors)."},
    {"send_twice", (PyCFunction)egress_send_twice, METH_O,
     "Protect one RTP packet once and send it twice."},
    {"close", (PyCFunction)egress_close, METH_NOARGS,
     "Stop sending (idempotent); the socket is not closed here."},
    {"history", (PyCFunction)egress_history, METH_O,
     "history(seq16) -> (seq, sent, size) | None: the stamped packet whose transport-wide "
     "sequence number's low 16 bits are seq16, among the last 16384 (seq unwrapped, sent "
     "in CLOCK_MONOTONIC seconds, size in bytes of RTP)."},
    {NULL},
};

static PyMemberDef egress_members[] = {
    {"tx_packets", T_LONGLONG, offsetof(EgressObject, tx_packets), 0, "datagrams sent"},
    {"tx_errors", T_LONGLONG, offsetof(EgressObject, tx_errors), 0,
     "packets that could not be protected or sent"},
    {"closed", T_BOOL, offsetof(EgressObject, closed), READONLY, "close() was called"},
    {"twcc_next", T_LONGLONG, offsetof(EgressObject, twcc_next), 0,
     "the next (unwrapped) transport-wide sequence number"},
    {"batch", T_OBJECT, offsetof(EgressObject, batch), 0,
     "a SendBatch: while it is open, datagrams are queued and sent by its flush()"},
    {"queued", T_INT, offsetof(EgressObject, queued), READONLY,
     "datagrams queued in the open batch"},
    {NULL},
};

static PyTypeObject EgressType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.Egress",
    .tp_doc = "Egress(sock, address, srtp_context, srtp_protect, keep=None): one subscriber "
              "transport's SRTP protect and sendto, in C.",
    .tp_basicsize = sizeof(EgressObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)egress_init,
    .tp_dealloc = (destructor)egress_dealloc,
    .tp_traverse = (traverseproc)egress_traverse,
    .tp_clear = (inquiry)egress_clear,
    .tp_methods = egress_methods,
    .tp_members = egress_members,
    .tp_getset = egress_getset,
};

static int batch_traverse(SendBatchObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->count; i++)
        Py_VISIT(self->pending[i]);
    return 0;
}

/* Send every pending Egress's queue (one sendmmsg each, in the order they first queued). */
static void batch_send_all(SendBatchObject *self)
{
    while (self->count > 0) {
        Py_ssize_t count = self->count;
        PyObject **pending = self->pending;
        self->pending = NULL;
        self->count = 0;
        self->capacity = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            EgressObject *e = (EgressObject *)pending[i];
            e->registered = 0;
            egress_flush(e, self);
        }
        for (Py_ssize_t i = 0; i < count; i++)
            Py_DECREF(pending[i]);
        PyMem_Free(pending);
    }
}

static int batch_clear(SendBatchObject *self)
{
    Py_ssize_t count = self->count;
    PyObject **pending = self->pending;
    self->pending = NULL;
    self->count = self->capacity = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        ((EgressObject *)pending[i])->registered = 0;
        Py_DECREF(pending[i]);
    }
    PyMem_Free(pending);
    return 0;
}

static void batch_dealloc(SendBatchObject *self)
{
    PyObject_GC_UnTrack(self);
    batch_send_all(self); /* nothing queued is left behind */
    batch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *batch_begin(SendBatchObject *self, PyObject *Py_UNUSED(ignored))
{
    self->depth++;
    Py_RETURN_NONE;
}

static PyObject *batch_flush(SendBatchObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->depth > 0)
        self->depth--;
    if (self->depth == 0)
        batch_send_all(self);
    Py_RETURN_NONE;
}

static PyMethodDef batch_methods[] = {
    {"begin", (PyCFunction)batch_begin, METH_NOARGS,
     "Open the batch (nests): Egresses pointing to it queue what they send."},
    {"flush", (PyCFunction)batch_flush, METH_NOARGS,
     "Close one begin(); at the outermost, send every queue (one sendmmsg per Egress)."},
    {NULL},
};

static PyMemberDef batch_members[] = {
    {"depth", T_INT, offsetof(SendBatchObject, depth), READONLY, "open begin() calls"},
    {"pending", T_PYSSIZET, offsetof(SendBatchObject, count), READONLY,
     "Egresses with queued datagrams"},
    {"syscalls", T_LONGLONG, offsetof(SendBatchObject, syscalls), READONLY,
     "sendmmsg calls that sent datagrams"},
    {"datagrams", T_LONGLONG, offsetof(SendBatchObject, datagrams), READONLY,
     "datagrams sent by them"},
    {NULL},
};

static PyTypeObject SendBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.SendBatch",
    .tp_doc = "SendBatch(): between begin() and flush(), the Egresses whose `batch` it is "
              "queue their datagrams; flush() sends each queue with one sendmmsg.",
    .tp_basicsize = sizeof(SendBatchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_traverse = (traverseproc)batch_traverse,
    .tp_clear = (inquiry)batch_clear,
    .tp_methods = batch_methods,
    .tp_members = batch_members,
};

/* ------------------------------------------------------------ RewriterCore */

typedef struct {
    PyObject_HEAD
    char started;
    char keep_first;
    char has_time;
    long long in_ssrc;
    long long switch_in_seq;
    long long seq_offset;
    long long ts_offset;
    long long pid_offset;
    long long tl0_offset;
    long long pid_bits;
    long long in_pid_last;
    long long in_pid_ext;
    long long out_seq;
    long long out_ext;
    long long out_ts;
    long long out_pid;
    long long out_tl0;
    long long skipped;
    double out_time;
} RewriterObject;

static PyObject *rewriter_get_out_time(RewriterObject *self, void *closure)
{
    if (!self->has_time)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->out_time);
}

static int rewriter_set_out_time(RewriterObject *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        self->has_time = 0;
        return 0;
    }
    double t = PyFloat_AsDouble(value);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    self->out_time = t;
    self->has_time = 1;
    return 0;
}

static PyGetSetDef rewriter_getset[] = {
    {"out_time", (getter)rewriter_get_out_time, (setter)rewriter_set_out_time,
     "when the newest packet was sent (None: never)", NULL},
    {NULL},
};

#define RW_MEMBER(name) {#name, T_LONGLONG, offsetof(RewriterObject, name), 0, NULL}
static PyMemberDef rewriter_members[] = {
    {"started", T_BOOL, offsetof(RewriterObject, started), 0, NULL},
    {"keep_first", T_BOOL, offsetof(RewriterObject, keep_first), 0, NULL},
    RW_MEMBER(in_ssrc),
    RW_MEMBER(switch_in_seq),
    RW_MEMBER(seq_offset),
    RW_MEMBER(ts_offset),
    RW_MEMBER(pid_offset),
    RW_MEMBER(tl0_offset),
    RW_MEMBER(pid_bits),
    RW_MEMBER(in_pid_last),
    RW_MEMBER(in_pid_ext),
    RW_MEMBER(out_seq),
    RW_MEMBER(out_ext),
    RW_MEMBER(out_ts),
    RW_MEMBER(out_pid),
    RW_MEMBER(out_tl0),
    RW_MEMBER(skipped),
    {NULL},
};

static PyTypeObject RewriterCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.RewriterCore",
    .tp_doc = "The hot fields of sfu.rtp.rewrite.StreamRewriter.",
    .tp_basicsize = sizeof(RewriterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_members = rewriter_members,
    .tp_getset = rewriter_getset,
};

/* ----------------------------------------------------------- ForwarderCore */

typedef struct {
    PyObject_HEAD
    PyObject *current;
    PyObject *rewriter;
    PyObject *queue;
    PyObject *egress;
    PyObject *pacer;
    PyObject *ext_plain;
    PyObject *ext_with_level;
    char is_video;
    char redundant;
    char mid_frame;
    char dropping;
    char broken;
    char closed;
    char has_ext;
    long long packets_sent;
    long long bytes_sent;
    long long send_failures;
    long long native_packets;
    long long b0;
    long long pt;
    long long ssrc;
    long long al_id;
    long long ast_id;
    int tid_limit; /* >= 0: temporal layers are being dropped (Python path only) */
} ForwarderObject;

static PyObject *forwarder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *obj = PyType_GenericNew(type, args, kwds);
    if (obj != NULL)
        ((ForwarderObject *)obj)->tid_limit = -1;
    return obj;
}

static int forwarder_traverse(ForwarderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->current);
    Py_VISIT(self->rewriter);
    Py_VISIT(self->queue);
    Py_VISIT(self->egress);
    Py_VISIT(self->pacer);
    Py_VISIT(self->ext_plain);
    Py_VISIT(self->ext_with_level);
    return 0;
}

static int forwarder_clear(ForwarderObject *self)
{
    Py_CLEAR(self->current);
    Py_CLEAR(self->rewriter);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->egress);
    Py_CLEAR(self->pacer);
    Py_CLEAR(self->ext_plain);
    Py_CLEAR(self->ext_with_level);
    return 0;
}

static void forwarder_dealloc(ForwarderObject *self)
{
    PyObject_GC_UnTrack(self);
    forwarder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FW_OBJ(name, field) {name, T_OBJECT, offsetof(ForwarderObject, field), 0, NULL}
#define FW_BOOL(name, field) {name, T_BOOL, offsetof(ForwarderObject, field), 0, NULL}
#define FW_LL(name, field) {name, T_LONGLONG, offsetof(ForwarderObject, field), 0, NULL}
static PyMemberDef forwarder_members[] = {
    FW_OBJ("current", current),
    FW_OBJ("rewriter", rewriter),
    FW_OBJ("_queue", queue),
    FW_OBJ("egress", egress),
    FW_OBJ("pacer", pacer),
    FW_OBJ("_ext_plain", ext_plain),
    FW_OBJ("_ext_with_level", ext_with_level),
    FW_BOOL("is_video", is_video),
    FW_BOOL("redundant", redundant),
    FW_BOOL("_mid_frame", mid_frame),
    FW_BOOL("_dropping", dropping),
    FW_BOOL("_broken", broken),
    FW_BOOL("closed", closed),
    FW_BOOL("_has_ext", has_ext),
    FW_LL("packets_sent", packets_sent),
    FW_LL("bytes_sent", bytes_sent),
    FW_LL("send_failures", send_failures),
    FW_LL("native_packets", native_packets),
    FW_LL("_b0", b0),
    FW_LL("_pt", pt),
    FW_LL("_ssrc", ssrc),
    FW_LL("_al_id", al_id),
    FW_LL("_ast_id", ast_id),
    {"_tid_limit", T_INT, offsetof(ForwarderObject, tid_limit), 0,
     "highest VP8 temporal layer forwarded; -1: all (only then may the C path serve it)"},
    {NULL},
};

static PyTypeObject ForwarderCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.ForwarderCore",
    .tp_doc = "The hot fields of sfu.forwarder.Forwarder.",
    .tp_basicsize = sizeof(ForwarderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = forwarder_new,
    .tp_dealloc = (destructor)forwarder_dealloc,
    .tp_traverse = (traverseproc)forwarder_traverse,
    .tp_clear = (inquiry)forwarder_clear,
    .tp_members = forwarder_members,
};

/* ------------------------------------------------------------------ fanout */

/* Incoming: sfu/_native.h */

/* Read an int attribute; -1 with an exception set on failure (ints here are >= -1). */
static int get_ll(PyObject *obj, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

static int load_vp8_rest(PyObject *vp8, Incoming *in)
{
    if (in->vp8_full)
        return 0;
    if (get_ll(vp8, s_picture_id_bits, &in->picture_id_bits) < 0 ||
        get_ll(vp8, s_tid_byte, &in->tid_byte) < 0 || get_ll(vp8, s_tk_flags, &in->tk_flags) < 0 ||
        get_ll(vp8, s_size, &in->size) < 0 ||
        get_ll(vp8, s_non_reference, &in->non_reference) < 0 ||
        get_ll(vp8, s_start, &in->start) < 0 ||
        get_ll(vp8, s_partition_id, &in->partition_id) < 0)
        return -1;
    in->vp8_full = 1;
    return 0;
}

static inline void put32(unsigned char *p, long long v)
{
    p[0] = (unsigned char)((v >> 24) & 0xFF);
    p[1] = (unsigned char)((v >> 16) & 0xFF);
    p[2] = (unsigned char)((v >> 8) & 0xFF);
    p[3] = (unsigned char)(v & 0xFF);
}

/* Append a bytes object; 0 on success, -1 when it is not bytes or does not fit. */
static inline int put_bytes(unsigned char *buf, int *pos, PyObject *b)
{
    if (!PyBytes_Check(b))
        return -1;
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (*pos + n > PLAIN_LIMIT)
        return -1;
    memcpy(buf + *pos, PyBytes_AS_STRING(b), (size_t)n);
    *pos += (int)n;
    return 0;
}

/*
 * Forward one packet natively when the forwarder is in its steady state.
 * Returns 1: handled (sent, failed and counted, or dropped as Python would drop
 * it); 0: not handled, nothing changed (the caller calls Forwarder.forward);
 * -1: a Python error.
 */
static int forward_fast(ForwarderObject *fw, PyObject *source, PyObject *vp8, Incoming *in,
                        double now)
{
    if (fw->closed || fw->current != source || fw->rewriter == NULL || fw->egress == NULL ||
        fw->tid_limit >= 0)
        return 0;
    if (!PyObject_TypeCheck(fw->rewriter, &RewriterCoreType) ||
        !PyObject_TypeCheck(fw->egress, &EgressType))
        return 0;
    RewriterObject *rw = (RewriterObject *)fw->rewriter;
    EgressObject *eg = (EgressObject *)fw->egress;
    if (eg->closed || !rw->started || rw->in_ssrc != in->ssrc)
        return 0;
    if (fw->queue != NULL && fw->queue != Py_None &&
        (!PyList_Check(fw->queue) || PyList_GET_SIZE(fw->queue) > 0))
        return 0; /* a switch is pending */
    if (fw->is_video) {
        if (fw->dropping || fw->broken)
            return 0;
        if (fw->pacer == NULL || fw->pacer == Py_None)
            return 0; /* frame starts need the pacer's word */
        {
            PyObject *idle = PyObject_GetAttr(fw->pacer, s_idle);
            if (idle == NULL)
                return -1;
            int is_idle = idle == Py_True;
            Py_DECREF(idle);
            if (!is_idle)
                return 0; /* the pacer holds video: its queue, its frame-start checks */
        }
    }
    /* StreamRewriter.accepts */
    long long d = seq_diff(in->seq, rw->switch_in_seq, 16);
    if (d < 0)
        return 1; /* older than the switch: not forwarded */
    long long out_seq = (in->seq + rw->seq_offset) & 0xFFFF;
    long long ahead = (out_seq - rw->out_seq) & 0xFFFF;
    if (!(0 < ahead && ahead < 0x8000))
        return 0; /* late: the Python path finds its number in the history */
    if (d > 0x4000)
        rw->switch_in_seq = (in->seq - 0x2000) & 0xFFFF;

    long long out_ts = (in->timestamp + rw->ts_offset) & 0xFFFFFFFFLL;
    long long pid = -1, tl0 = -1;
    int rewrite_descriptor = 0;
    if (in->has_vp8 && (in->picture_id >= 0 || in->tl0picidx >= 0)) {
        if (load_vp8_rest(vp8, in) < 0)
            return -1;
        if (in->picture_id >= 0) { /* StreamRewriter.picture_id */
            long long bits = rw->pid_bits ? rw->pid_bits : 15;
            long long delta = seq_diff(in->picture_id, rw->in_pid_last, (int)bits);
            if (delta > 0) {
                rw->in_pid_last = in->picture_id;
                rw->in_pid_ext += delta;
                pid = (rw->in_pid_ext + rw->pid_offset) & 0x7FFF;
            } else {
                pid = (rw->in_pid_ext + delta + rw->pid_offset) & 0x7FFF;
            }
        }
        if (in->tl0picidx >= 0)
            tl0 = (in->tl0picidx + rw->tl0_offset) & 0xFF;
        rewrite_descriptor = rw->pid_offset || rw->tl0_offset || in->picture_id_bits == 7;
    }

    unsigned char buf[BUFFER_SIZE];
    int pos = 12;
    buf[0] = (unsigned char)fw->b0;
    buf[1] = (unsigned char)(((in->marker & 1) << 7) | (fw->pt & 0x7F));
    put16(buf + 2, out_seq);
    put32(buf + 4, out_ts);
    put32(buf + 8, fw->ssrc);
    if (fw->has_ext) {
        long long level = fw->al_id ? in->audio_level : -1;
        PyObject *layout = level >= 0 ? fw->ext_with_level : fw->ext_plain;
        if (layout == NULL || !PyTuple_Check(layout) || PyTuple_GET_SIZE(layout) != 2)
            return 0;
        if (put_bytes(buf, &pos, PyTuple_GET_ITEM(layout, 0)) < 0)
            return 0;
        if (level >= 0) {
            buf[pos++] = (unsigned char)(fw->al_id << 4);
            buf[pos++] = (unsigned char)level;
        }
        if (fw->ast_id) {
            buf[pos++] = (unsigned char)((fw->ast_id << 4) | 2);
            if (in->has_ast) {
                memcpy(buf + pos, in->ast, 3);
            } else {
                long long v = (long long)(now * (double)(1 << 18)) & 0xFFFFFF;
                buf[pos] = (unsigned char)(v >> 16);
                buf[pos + 1] = (unsigned char)(v >> 8);
                buf[pos + 2] = (unsigned char)v;
            }
            pos += 3;
        }
        if (put_bytes(buf, &pos, PyTuple_GET_ITEM(layout, 1)) < 0)
            return 0;
    }
    long long body = in->payload_start;
    if (rewrite_descriptor) { /* build_vp8_descriptor */
        unsigned char x = 0;
        unsigned char tail[4];
        int t = 0;
        if (in->picture_id >= 0) {
            x |= 0x80;
            long long p = pid & 0x7FFF;
            tail[t++] = (unsigned char)(0x80 | (p >> 8));
            tail[t++] = (unsigned char)(p & 0xFF);
        }
        if (in->tl0picidx >= 0) {
            x |= 0x40;
            tail[t++] = (unsigned char)(tl0 & 0xFF);
        }
        if (in->tid_byte >= 0) {
            x |= (unsigned char)in->tk_flags;
            tail[t++] = (unsigned char)in->tid_byte;
        }
        unsigned char b = (unsigned char)((in->non_reference << 5) | (in->start << 4) |
                                          in->partition_id);
        if (x) {
            buf[pos++] = b | 0x80;
            buf[pos++] = x;
            memcpy(buf + pos, tail, (size_t)t);
            pos += t;
        } else {
            buf[pos++] = b;
        }
        body = in->payload_start + in->size;
    }
    long long n = in->payload_end - body;
    if (n < 0 || body < 0 || in->payload_end > in->data_len)
        return 0;
    if (pos + n > PLAIN_LIMIT) {
        pos = PLAIN_LIMIT + 1; /* egress_emit refuses and counts it, as protect would */
    } else {
        memcpy(buf + pos, in->data + body, (size_t)n);
        pos += (int)n;
    }

    int copies = (!fw->is_video && fw->redundant) ? 2 : 1;
    if (!egress_emit(eg, buf, pos, copies)) {
        fw->send_failures++;
        return 1;
    }
    fw->packets_sent++;
    fw->native_packets++;
    fw->bytes_sent += pos;
    /* StreamRewriter.sent: out_seq is newer than rw->out_seq (checked above) */
    if (ahead > 1)
        rw->skipped += ahead - 1;
    rw->out_seq = out_seq;
    rw->out_ext += ahead;
    rw->out_ts = out_ts;
    rw->out_time = now;
    rw->has_time = 1;
    if (pid >= 0)
        rw->out_pid = pid;
    if (tl0 >= 0)
        rw->out_tl0 = tl0;
    fw->mid_frame = !(in->marker & 1);
    return 1;
}

/* For sfu/_ingress.c (declared in _native.h). */
int native_forward_incoming(PyObject *f, PyObject *source, Incoming *in, double now)
{
    if (!PyObject_TypeCheck(f, &ForwarderCoreType))
        return 0;
    return forward_fast((ForwarderObject *)f, source, Py_None, in, now);
}

static PyObject *fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fanout(source, pkt, vp8, now, forwarders)");
        return NULL;
    }
    PyObject *source = args[0], *pkt = args[1], *vp8 = args[2], *now_obj = args[3],
             *forwarders = args[4];
    if (!PyTuple_Check(forwarders)) {
        PyErr_SetString(PyExc_TypeError, "forwarders must be a tuple");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(forwarders);
    if (count == 0)
        Py_RETURN_NONE;
    double now = PyFloat_AsDouble(now_obj);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;

    Incoming in;
    memset(&in, 0, sizeof(in));
    int native = 1; /* the packet could be read: the fast path may be tried */
    PyObject *data = PyObject_GetAttr(pkt, s_data);
    if (data == NULL)
        return NULL;
    if (!PyBytes_Check(data)) {
        native = 0;
    } else {
        in.data = (const unsigned char *)PyBytes_AS_STRING(data);
        in.data_len = PyBytes_GET_SIZE(data);
        if (get_ll(pkt, s_seq, &in.seq) < 0 || get_ll(pkt, s_timestamp, &in.timestamp) < 0 ||
            get_ll(pkt, s_ssrc, &in.ssrc) < 0 || get_ll(pkt, s_marker, &in.marker) < 0 ||
            get_ll(pkt, s_payload_start, &in.payload_start) < 0 ||
            get_ll(pkt, s_payload_end, &in.payload_end) < 0 ||
            get_ll(pkt, s_audio_level, &in.audio_level) < 0)
            goto error;
        PyObject *ast = PyObject_GetAttr(pkt, s_abs_send_time);
        if (ast == NULL)
            goto error;
        if (PyBytes_Check(ast) && PyBytes_GET_SIZE(ast) == 3) {
            memcpy(in.ast, PyBytes_AS_STRING(ast), 3);
            in.has_ast = 1;
        }
        Py_DECREF(ast);
        if (vp8 != Py_None) {
            in.has_vp8 = 1;
            if (get_ll(vp8, s_picture_id, &in.picture_id) < 0 ||
                get_ll(vp8, s_tl0picidx, &in.tl0picidx) < 0)
                goto error;
        }
    }

    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *f = PyTuple_GET_ITEM(forwarders, i);
        int handled = 0;
        if (native && PyObject_TypeCheck(f, &ForwarderCoreType)) {
            handled = forward_fast((ForwarderObject *)f, source, vp8, &in, now);
            if (handled < 0)
                goto error;
        }
        if (!handled) {
            PyObject *r =
                PyObject_CallMethodObjArgs(f, s_forward, source, pkt, vp8, now_obj, NULL);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
        }
    }
    Py_DECREF(data);
    Py_RETURN_NONE;
error:
    Py_DECREF(data);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(source, pkt, vp8, now, forwarders): hand one packet of `source` to each "
     "forwarder, natively where the forwarder is in its steady state, else through "
     "Forwarder.forward."},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sfu._native",
    .m_doc = "Parley's per-forwarded-packet loop in C (see sfu/_native.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(var, text)                                                                     \
    do {                                                                                      \
        var = PyUnicode_InternFromString(text);                                               \
        if (var == NULL)                                                                      \
            return NULL;                                                                      \
    } while (0)

PyMODINIT_FUNC PyInit__native(void)
{
    INTERN(s_data, "data");
    INTERN(s_seq, "seq");
    INTERN(s_timestamp, "timestamp");
    INTERN(s_ssrc, "ssrc");
    INTERN(s_marker, "marker");
    INTERN(s_payload_start, "payload_start");
    INTERN(s_payload_end, "payload_end");
    INTERN(s_audio_level, "audio_level");
    INTERN(s_abs_send_time, "abs_send_time");
    INTERN(s_picture_id, "picture_id");
    INTERN(s_picture_id_bits, "picture_id_bits");
    INTERN(s_tl0picidx, "tl0picidx");
    INTERN(s_tid_byte, "tid_byte");
    INTERN(s_tk_flags, "tk_flags");
    INTERN(s_size, "size");
    INTERN(s_non_reference, "non_reference");
    INTERN(s_start, "start");
    INTERN(s_partition_id, "partition_id");
    INTERN(s_idle, "idle");
    INTERN(s_forward, "forward");
    if (PyType_Ready(&EgressType) < 0 || PyType_Ready(&RewriterCoreType) < 0 ||
        PyType_Ready(&ForwarderCoreType) < 0 || PyType_Ready(&SendBatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Egress", (PyObject *)&EgressType) < 0 ||
        PyModule_AddObjectRef(m, "RewriterCore", (PyObject *)&RewriterCoreType) < 0 ||
        PyModule_AddObjectRef(m, "ForwarderCore", (PyObject *)&ForwarderCoreType) < 0 ||
        PyModule_AddObjectRef(m, "SendBatch", (PyObject *)&SendBatchType) < 0 ||
        ingress_add_types(m) < 0 || feedback_add_types(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
