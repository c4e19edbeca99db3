/*
 * sfu._recv: batched datagram reads in C (recvmmsg), with SRTP unprotect of RTP.
 *
 * Reader(fd, batch, context, unprotect, keep) reads up to `batch` datagrams from a
 * non-blocking UDP socket with one recvmmsg(2) per read(). When `context` and
 * `unprotect` are set (the libsrtp session's srtp_t and srtp_unprotect, handed over by
 * address by sfu/aiortc_adapter/media_port.py, which owns every private-API use), an
 * SRTP RTP datagram (first byte 128..191, second byte not an RTCP packet type 192..223,
 * at least 12 bytes) is unprotected in place and returned as the plain packet
 * (`bytes`); one that fails to unprotect is dropped and counted in `rx_errors`.
 * Everything else (RTCP, STUN, DTLS, and every datagram without a context) comes back
 * as `(data, address)`, the address as socket.recvfrom gives it, in arrival order.
 *
 * read() returns [] when nothing is queued and raises OSError for a socket error (an
 * ICMP port unreachable reported on the socket, for example) when no datagram came
 * before it. `keep` (the socket and the libsrtp session) is held until close().
 * Everything runs with the GIL held; no global state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH_MAX 64
#define DATAGRAM_MAX 2048

typedef int (*srtp_unprotect_fn)(void *ctx, void *srtp_hdr, int *len_ptr);

typedef struct {
    PyObject_HEAD
    int fd;
    int batch;
    void *srtp;
    srtp_unprotect_fn unprotect;
    PyObject *keep;
    long long rx_errors;    /* RTP datagrams that failed to unprotect */
    long long rx_datagrams; /* datagrams read */
    long long reads;        /* recvmmsg calls that returned at least one datagram */
    PyObject *last_address; /* the address tuple of the last non-RTP datagram */
    struct sockaddr_storage last_sockaddr;
    socklen_t last_len;
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    struct sockaddr_storage addrs[BATCH_MAX];
    unsigned char *buffers; /* BATCH_MAX * DATAGRAM_MAX */
} ReaderObject;

static int reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    Py_VISIT(self->last_address);
    return 0;
}

static int reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->keep);
    Py_CLEAR(self->last_address);
    return 0;
}

static void reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    PyMem_Free(self->buffers);
    self->buffers = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int reader_init(ReaderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "batch", "context", "unprotect", "keep", NULL};
    int fd, batch = BATCH_MAX;
    unsigned long long context = 0, unprotect = 0;
    PyObject *keep = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|iKKO", kwlist, &fd, &batch, &context,
                                     &unprotect, &keep))
        return -1;
    if (batch < 1 || batch > BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "batch must be 1..%d", BATCH_MAX);
        return -1;
    }
    if ((context == 0) != (unprotect == 0)) {
        PyErr_SetString(PyExc_ValueError, "context and unprotect go together");
        return -1;
    }
    if (self->buffers == NULL) {
        self->buffers = PyMem_Malloc((size_t)BATCH_MAX * DATAGRAM_MAX);
        if (self->buffers == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->fd = fd;
    self->batch = batch;
    self->srtp = (void *)(uintptr_t)context;
    self->unprotect = (srtp_unprotect_fn)(uintptr_t)unprotect;
    Py_INCREF(keep);
    Py_XSETREF(self->keep, keep);
    Py_CLEAR(self->last_address);
    self->last_len = 0;
    return 0;
}

/* (host, port) or (host, port, flowinfo, scope_id), as socket.recvfrom returns it; the
 * last one is reused while the sender does not change. */
static PyObject *address_of(ReaderObject *self, const struct sockaddr_storage *sa,
                            socklen_t len)
{
    if (self->last_address != NULL && len == self->last_len &&
        memcmp(sa, &self->last_sockaddr, len) == 0) {
        Py_INCREF(self->last_address);
        return self->last_address;
    }
    char host[INET6_ADDRSTRLEN];
    PyObject *address;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
        address = Py_BuildValue("(si)", host, (int)ntohs(v4->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
        address = Py_BuildValue("(siII)", host, (int)ntohs(v6->sin6_port),
                                (unsigned int)ntohl(v6->sin6_flowinfo),
                                (unsigned int)v6->sin6_scope_id);
    } else {
        address = Py_BuildValue("(si)", "", 0);
    }
    if (address == NULL)
        return NULL;
    Py_INCREF(address);
    Py_XSETREF(self->last_address, address);
    memcpy(&self->last_sockaddr, sa, len);
    self->last_len = len;
    return address;
}

static PyObject *reader_read(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "reader closed");
        return NULL;
    }
    int batch = self->batch;
    for (int i = 0; i < batch; i++) {
        self->iov[i].iov_base = self->buffers + (size_t)i * DATAGRAM_MAX;
        self->iov[i].iov_len = DATAGRAM_MAX;
        memset(&self->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
        self->msgs[i].msg_hdr.msg_iov = &self->iov[i];
        self->msgs[i].msg_hdr.msg_iovlen = 1;
        self->msgs[i].msg_hdr.msg_name = &self->addrs[i];
        self->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    }
    int n;
    do {
        n = recvmmsg(self->fd, self->msgs, (unsigned int)batch, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->reads++;
    self->rx_datagrams += n;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        unsigned char *buf = self->iov[i].iov_base;
        int len = (int)self->msgs[i].msg_len;
        if (len > DATAGRAM_MAX)
            len = DATAGRAM_MAX; /* truncated, as recvfrom(DATAGRAM_MAX) would */
        PyObject *item;
        if (self->srtp != NULL && len >= 12 && buf[0] > 127 && buf[0] < 192 &&
            !(buf[1] > 191 && buf[1] < 224)) {
            int plain = len;
            if (self->unprotect(self->srtp, buf, &plain) != 0) {
                self->rx_errors++;
                continue;
            }
            item = PyBytes_FromStringAndSize((const char *)buf, plain);
        } else {
            PyObject *data = PyBytes_FromStringAndSize((const char *)buf, len);
            if (data == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyObject *address = address_of(self, &self->addrs[i], self->msgs[i].msg_hdr.msg_namelen);
            if (address == NULL) {
                Py_DECREF(data);
                Py_DECREF(out);
                return NULL;
            }
            item = PyTuple_Pack(2, data, address);
            Py_DECREF(data);
            Py_DECREF(address);
        }
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *reader_close(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;
    self->srtp = NULL;
    self->unprotect = NULL;
    Py_CLEAR(self->keep);
    Py_CLEAR(self->last_address);
    Py_RETURN_NONE;
}

static PyMethodDef reader_methods[] = {
    {"read", (PyCFunction)reader_read, METH_NOARGS,
     "Up to `batch` queued datagrams: plain RTP as bytes, the rest as (data, address)."},
    {"close", (PyCFunction)reader_close, METH_NOARGS,
     "Stop reading (the socket is not closed) and release `keep`."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef reader_members[] = {
    {"rx_errors", T_LONGLONG, offsetof(ReaderObject, rx_errors), READONLY,
     "RTP datagrams that failed to unprotect (dropped)"},
    {"rx_datagrams", T_LONGLONG, offsetof(ReaderObject, rx_datagrams), READONLY,
     "datagrams read"},
    {"reads", T_LONGLONG, offsetof(ReaderObject, reads), READONLY,
     "recvmmsg calls that returned datagrams"},
    {"batch", T_INT, offsetof(ReaderObject, batch), READONLY, "datagrams per read() at most"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._recv.Reader",
    .tp_doc = PyDoc_STR("Batched reads of one UDP socket (recvmmsg), SRTP RTP unprotected."),
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_methods = reader_methods,
    .tp_members = reader_members,
};

static struct PyModuleDef recv_module = {
    PyModuleDef_HEAD_INIT, .m_name = "sfu._recv",
    .m_doc = "Batched datagram reads (recvmmsg) with SRTP unprotect of RTP.", .m_size = -1,
};

PyMODINIT_FUNC PyInit__recv(void)
{
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&recv_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0 ||
        PyModule_AddIntConstant(m, "DATAGRAM_MAX", DATAGRAM_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
