/*
 * sfu._native, part two: a publisher's steady-state ingress in C.
 *
 * Per SRTP datagram of a publish transport, Ingress.receive(data, now) does what
 * MediaPort -> PublishSide.on_rtp -> Source.on_rtp do in Python for a packet of the
 * steady state: srtp_unprotect (libsrtp, through the address the adapter hands over,
 * as for Egress's srtp_protect), the RTP header, the audio-level extension, the VP8
 * descriptor, receive statistics, NACK gap tracking, the packet cache and the
 * source's counters, then the forwarding loop of sfu/_native.c with the packet's
 * fields (no RtpView / Vp8Descriptor unless a forwarder needs Forwarder.forward).
 *
 * The state stays where Python has it: the hot fields of ReceiveStatistics,
 * NackGenerator, PacketCache and Source live in the C base classes below
 * (ReceiveStatsCore, NackCore, PacketCacheCore, SourceCore), which Python reads and
 * writes as attributes, as RewriterCore / ForwarderCore do for the forwarder. Each
 * part does its common case here and calls its Python method otherwise (a gap for
 * NACK tracking, a far jump for the statistics, an old packet for the cache). A
 * packet that is not of the steady state as a whole (unknown SSRC, RTX, another
 * payload type such as RED, padding only, H.264, a malformed header, extension block
 * or VP8 descriptor) is handed, decrypted and untouched, to the Python fallback
 * (PublishSide.on_rtp), which then does everything. tests/unit/test_ingress.py holds
 * the two to the same outputs and state.
 */
#include "_native.h"
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SRTP_LIMIT 1500 /* what the Python path unprotects at most (srtp_transform) */
#define STATS_MAX_DROPOUT 3000
#define STATS_MAX_MISORDER 1024
#define NACK_RESTART_DISTANCE 3000

typedef int (*srtp_unprotect_fn)(void *ctx, void *srtp_hdr, int *len_ptr);

static PyObject *s_add, *s_store, *s_source_has_missing, *s_rebuild, *s_forward,
    *s_abs_send_time;

/* -------------------------------------------------------- ReceiveStatsCore */

typedef struct {
    PyObject_HEAD
    char started;
    long long clock_rate, base, max, received, duplicates, bad_seq, last_ts, expected_prior,
        received_prior, lsr;
    double last_arrival, jitter;
    PyObject *sr_arrival;
    PyObject *seen; /* list of STATS_MAX_MISORDER ints */
} StatsObject;

static void stats_dealloc(StatsObject *self)
{
    Py_CLEAR(self->sr_arrival);
    Py_CLEAR(self->seen);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define ST_LL(name, field) {name, T_LONGLONG, offsetof(StatsObject, field), 0, NULL}
static PyMemberDef stats_members[] = {
    {"_started", T_BOOL, offsetof(StatsObject, started), 0, NULL},
    ST_LL("_clock_rate", clock_rate),
    ST_LL("_base", base),
    ST_LL("_max", max),
    ST_LL("_received", received),
    ST_LL("_duplicates", duplicates),
    ST_LL("_bad_seq", bad_seq),
    ST_LL("_last_ts", last_ts),
    ST_LL("_expected_prior", expected_prior),
    ST_LL("_received_prior", received_prior),
    ST_LL("_lsr", lsr),
    {"_last_arrival", T_DOUBLE, offsetof(StatsObject, last_arrival), 0, NULL},
    {"_jitter", T_DOUBLE, offsetof(StatsObject, jitter), 0, NULL},
    {"_sr_arrival", T_OBJECT, offsetof(StatsObject, sr_arrival), 0, NULL},
    {"_seen", T_OBJECT, offsetof(StatsObject, seen), 0, NULL},
    {NULL},
};

static PyTypeObject StatsCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.ReceiveStatsCore",
    .tp_doc = "The fields of sfu.receive_stats.ReceiveStatistics.",
    .tp_basicsize = sizeof(StatsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)stats_dealloc,
    .tp_members = stats_members,
};

static int set_list_ll(PyObject *list, Py_ssize_t i, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    PyObject *old = PyList_GET_ITEM(list, i);
    PyList_SET_ITEM(list, i, o);
    Py_XDECREF(old);
    return 0;
}

/* ReceiveStatistics.add; 1: done, 0: not the common case (call the method), -1: error. */
static int stats_add(StatsObject *st, long long seq, long long ts, double now)
{
    PyObject *seen = st->seen;
    if (!st->started || seen == NULL || !PyList_CheckExact(seen) ||
        PyList_GET_SIZE(seen) != STATS_MAX_MISORDER)
        return 0;
    long long mx = st->max;
    long long d = ((seq - mx + 0x8000) & 0xFFFF) - 0x8000;
    if (0 < d && d < STATS_MAX_DROPOUT) {
        long long ext = mx + d;
        if (set_list_ll(seen, (Py_ssize_t)(ext & (STATS_MAX_MISORDER - 1)), ext) < 0)
            return -1;
        st->max = ext;
        st->received++;
        st->bad_seq = -1;
        long long tsd = ((ts - st->last_ts + 0x80000000LL) & 0xFFFFFFFFLL) - 0x80000000LL;
        double delta = (now - st->last_arrival) * (double)st->clock_rate - (double)tsd;
        if (delta < 0)
            delta = -delta;
        st->jitter += (delta - st->jitter) * 0.0625;
        st->last_arrival = now;
        st->last_ts = ts;
        return 1;
    }
    if (-STATS_MAX_MISORDER < d && d <= 0) {
        st->bad_seq = -1;
        long long ext = mx + d;
        Py_ssize_t i = (Py_ssize_t)(ext & (STATS_MAX_MISORDER - 1));
        PyObject *old = PyList_GET_ITEM(seen, i);
        if (PyLong_CheckExact(old)) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(old, &overflow);
            if (!overflow && v == ext) {
                st->duplicates++;
                return 1;
            }
        }
        if (set_list_ll(seen, i, ext) < 0)
            return -1;
        st->received++;
        if (ext < st->base)
            st->base = ext;
        return 1;
    }
    return 0;
}

/* --------------------------------------------------------------- NackCore */

typedef struct {
    PyObject_HEAD
    PyObject *newest;  /* int (extended) or None */
    PyObject *missing; /* dict: extended seq -> _Missing */
    long long bad_seq, max_missing;
} NackObject;

static void nack_dealloc(NackObject *self)
{
    Py_CLEAR(self->newest);
    Py_CLEAR(self->missing);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef nack_members[] = {
    {"_newest", T_OBJECT, offsetof(NackObject, newest), 0, NULL},
    {"_missing", T_OBJECT, offsetof(NackObject, missing), 0, NULL},
    {"_bad_seq", T_LONGLONG, offsetof(NackObject, bad_seq), 0, NULL},
    {"_max_missing", T_LONGLONG, offsetof(NackObject, max_missing), 0, NULL},
    {NULL},
};

static PyTypeObject NackCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.NackCore",
    .tp_doc = "The hot fields of sfu.nack.NackGenerator.",
    .tp_basicsize = sizeof(NackObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)nack_dealloc,
    .tp_members = nack_members,
};

/* An int attribute that must be an exact int within long long; 0 when it is not. */
static int exact_ll(PyObject *o, long long *out)
{
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

static int set_obj_ll(PyObject **field, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    Py_XSETREF(*field, o);
    return 0;
}

/* NackGenerator.add; 1: done, 0: call the method (a gap, a restart candidate), -1. */
static int nack_add(NackObject *nk, long long seq)
{
    long long newest;
    if (!exact_ll(nk->newest, &newest) || nk->missing == NULL || !PyDict_CheckExact(nk->missing))
        return 0;
    long long d = ((seq - newest + 0x8000) & 0xFFFF) - 0x8000;
    if (d == 1) {
        if (set_obj_ll(&nk->newest, newest + 1) < 0)
            return -1;
        nk->bad_seq = -1;
        return 1;
    }
    if (d > 1)
        return 0;
    if (d == 0)
        return 1;
    if (PyDict_GET_SIZE(nk->missing) > 0) {
        PyObject *key = PyLong_FromLongLong(newest + d);
        if (key == NULL)
            return -1;
        int has = PyDict_Contains(nk->missing, key);
        if (has > 0 && PyDict_DelItem(nk->missing, key) < 0)
            has = -1;
        Py_DECREF(key);
        if (has < 0)
            return -1;
        if (has) {
            nk->bad_seq = -1;
            return 1;
        }
    }
    if (-d < NACK_RESTART_DISTANCE || -d <= nk->max_missing) {
        nk->bad_seq = -1;
        return 1;
    }
    return 0;
}

/* -------------------------------------------------------- PacketCacheCore */

typedef struct {
    PyObject_HEAD
    long long size, mask, restart;
    PyObject *ext, *data, *meta; /* lists of `size` entries */
    PyObject *newest;            /* int (extended) or None */
    PyObject *pending;
} CacheObject;

static void cache_dealloc(CacheObject *self)
{
    Py_CLEAR(self->ext);
    Py_CLEAR(self->data);
    Py_CLEAR(self->meta);
    Py_CLEAR(self->newest);
    Py_CLEAR(self->pending);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef cache_members[] = {
    {"_size", T_LONGLONG, offsetof(CacheObject, size), 0, NULL},
    {"_mask", T_LONGLONG, offsetof(CacheObject, mask), 0, NULL},
    {"_restart", T_LONGLONG, offsetof(CacheObject, restart), 0, NULL},
    {"_ext", T_OBJECT, offsetof(CacheObject, ext), 0, NULL},
    {"_data", T_OBJECT, offsetof(CacheObject, data), 0, NULL},
    {"_meta", T_OBJECT, offsetof(CacheObject, meta), 0, NULL},
    {"_newest", T_OBJECT, offsetof(CacheObject, newest), 0, NULL},
    {"_pending", T_OBJECT, offsetof(CacheObject, pending), 0, NULL},
    {NULL},
};

static PyTypeObject CacheCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.PacketCacheCore",
    .tp_doc = "The fields of sfu.packet_cache.PacketCache.",
    .tp_basicsize = sizeof(CacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)cache_dealloc,
    .tp_members = cache_members,
};

static void list_put(PyObject *list, Py_ssize_t i, PyObject *o) /* steals o */
{
    PyObject *old = PyList_GET_ITEM(list, i);
    PyList_SET_ITEM(list, i, o);
    Py_XDECREF(old);
}

/* PacketCache.store(seq, data) (meta None); 1: done, 0: call the method, -1: error. */
static int cache_store(CacheObject *c, long long seq, PyObject *data)
{
    long long newest;
    if (!exact_ll(c->newest, &newest) || c->size < 1 || c->mask != c->size - 1)
        return 0;
    PyObject *lists[3] = {c->ext, c->data, c->meta};
    for (int k = 0; k < 3; k++)
        if (lists[k] == NULL || !PyList_CheckExact(lists[k]) ||
            PyList_GET_SIZE(lists[k]) != c->size)
            return 0;
    long long ext = newest + ((seq - newest + 0x8000) & 0xFFFF) - 0x8000;
    if (ext <= newest - c->size)
        return 0; /* _store_old */
    PyObject *e = PyLong_FromLongLong(ext);
    if (e == NULL)
        return -1;
    if (ext > newest) {
        Py_INCREF(e);
        Py_XSETREF(c->newest, e);
    }
    if (c->pending != NULL && c->pending != Py_None) {
        Py_INCREF(Py_None);
        Py_XSETREF(c->pending, Py_None);
    }
    Py_ssize_t i = (Py_ssize_t)(ext & c->mask);
    list_put(c->ext, i, e);
    Py_INCREF(data);
    list_put(c->data, i, data);
    Py_INCREF(Py_None);
    list_put(c->meta, i, Py_None);
    return 1;
}

/* ------------------------------------------------------------- SourceCore */

typedef struct {
    PyObject_HEAD
    PyObject *stats, *nack, *cache, *forwarders, *owner, *h264, *last_packet_time, *tid_bytes,
        *tid_frames, *last_keyframe_time, *last_keyframe_seq;
    long long payload_type, audio_level_ext, packets, bytes, loudness_sum, loudness_packets,
        width, height, native_packets;
    char is_vp8, keyframe_pending;
} SourceObject;

#define SOURCE_OBJECTS(X)                                                                     \
    X(stats) X(nack) X(cache) X(forwarders) X(owner) X(h264) X(last_packet_time) X(tid_bytes) \
        X(tid_frames) X(last_keyframe_time) X(last_keyframe_seq)

static int source_traverse(SourceObject *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    SOURCE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int source_clear(SourceObject *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    SOURCE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void source_dealloc(SourceObject *self)
{
    PyObject_GC_UnTrack(self);
    source_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define SO_OBJ(name, f) {name, T_OBJECT, offsetof(SourceObject, f), 0, NULL}
#define SO_LL(name, f) {name, T_LONGLONG, offsetof(SourceObject, f), 0, NULL}
static PyMemberDef source_members[] = {
    SO_OBJ("stats", stats),
    SO_OBJ("nack", nack),
    SO_OBJ("cache", cache),
    SO_OBJ("forwarders", forwarders),
    SO_OBJ("_owner", owner),
    SO_OBJ("h264", h264),
    SO_OBJ("last_packet_time", last_packet_time),
    SO_OBJ("tid_bytes", tid_bytes),
    SO_OBJ("tid_frames", tid_frames),
    SO_OBJ("last_keyframe_time", last_keyframe_time),
    SO_OBJ("last_keyframe_seq", last_keyframe_seq),
    SO_LL("payload_type", payload_type),
    SO_LL("_audio_level_ext", audio_level_ext),
    SO_LL("packets", packets),
    SO_LL("bytes", bytes),
    SO_LL("loudness_sum", loudness_sum),
    SO_LL("loudness_packets", loudness_packets),
    SO_LL("width", width),
    SO_LL("height", height),
    {"native_packets", T_LONGLONG, offsetof(SourceObject, native_packets), 0,
     "packets this source took in through the C ingress"},
    {"is_vp8", T_BOOL, offsetof(SourceObject, is_vp8), 0, NULL},
    {"keyframe_pending", T_BOOL, offsetof(SourceObject, keyframe_pending), 0, NULL},
    {NULL},
};

static PyTypeObject SourceCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.SourceCore",
    .tp_doc = "The fields of sfu.source.Source that its ingress updates.",
    .tp_basicsize = sizeof(SourceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)source_dealloc,
    .tp_traverse = (traverseproc)source_traverse,
    .tp_clear = (inquiry)source_clear,
    .tp_members = source_members,
};

/* ------------------------------------------------------------------ parse */

typedef struct {
    long long pt, ext_profile, ext_start, ext_end;
} Header;

/* RtpView: 1 when it parses (fields in `in` and `h`), 0 when RtpView would raise. */
static int parse_header(const unsigned char *p, Py_ssize_t n, Incoming *in, Header *h)
{
    if (n < 12 || (p[0] >> 6) != 2)
        return 0;
    h->pt = p[1] & 0x7F;
    in->marker = p[1] >> 7;
    in->seq = ((long long)p[2] << 8) | p[3];
    in->timestamp = ((long long)p[4] << 24) | ((long long)p[5] << 16) | (p[6] << 8) | p[7];
    in->ssrc = ((long long)p[8] << 24) | ((long long)p[9] << 16) | (p[10] << 8) | p[11];
    Py_ssize_t pos = 12 + 4 * (p[0] & 0x0F);
    if (pos > n)
        return 0;
    h->ext_profile = 0;
    h->ext_start = h->ext_end = pos;
    if (p[0] & 0x10) {
        if (pos + 4 > n)
            return 0;
        h->ext_profile = (p[pos] << 8) | p[pos + 1];
        Py_ssize_t words = (p[pos + 2] << 8) | p[pos + 3];
        h->ext_start = pos + 4;
        pos = pos + 4 + 4 * words;
        h->ext_end = pos;
        if (pos > n)
            return 0;
    }
    Py_ssize_t padding = 0;
    if (p[0] & 0x20) {
        padding = p[n - 1];
        if (padding == 0 || pos + padding > n)
            return 0;
    }
    in->payload_start = pos;
    in->payload_end = n - padding;
    return 1;
}

/* parse_extensions(...).get(id): sets off and len of the last element `id` (len -1: none);
 * 0 when parse_extensions would raise. */
static int find_extension(const unsigned char *p, const Header *h, long long id, Py_ssize_t *off,
                          Py_ssize_t *len)
{
    *len = -1;
    Py_ssize_t pos = h->ext_start, end = h->ext_end;
    if (h->ext_profile == 0xBEDE) {
        while (pos < end) {
            int b = p[pos];
            if (b == 0) {
                pos++;
                continue;
            }
            int eid = b >> 4, l = (b & 0x0F) + 1;
            if (eid == 15)
                break;
            pos++;
            if (pos + l > end)
                return 0;
            if (eid == id) {
                *off = pos;
                *len = l;
            }
            pos += l;
        }
    } else if ((h->ext_profile & 0xFFF0) == 0x1000) {
        while (pos + 1 < end) {
            int eid = p[pos];
            if (eid == 0) {
                pos++;
                continue;
            }
            int l = p[pos + 1];
            pos += 2;
            if (pos + l > end)
                return 0;
            if (eid == id) {
                *off = pos;
                *len = l;
            }
            pos += l;
        }
    }
    return 1;
}

typedef struct {
    int keyframe;
    long long width, height;
} Vp8Extra;

/* Vp8Descriptor(data, start, end): 1 with the fields in `in`, 0 when it would raise. */
static int parse_vp8(const unsigned char *p, Incoming *in, Vp8Extra *x)
{
    Py_ssize_t pos = in->payload_start, end = in->payload_end;
    if (pos >= end)
        return 0;
    int b0 = p[pos++];
    in->start = (b0 >> 4) & 1;
    in->non_reference = (b0 >> 5) & 1;
    in->partition_id = b0 & 0x07;
    in->picture_id = -1;
    in->picture_id_bits = 0;
    in->tl0picidx = -1;
    in->tid_byte = -1;
    in->tk_flags = 0;
    if (b0 & 0x80) {
        if (pos >= end)
            return 0;
        int xb = p[pos++];
        if (xb & 0x80) {
            if (pos >= end)
                return 0;
            int b = p[pos];
            if (b & 0x80) {
                if (pos + 1 >= end)
                    return 0;
                in->picture_id = ((b & 0x7F) << 8) | p[pos + 1];
                in->picture_id_bits = 15;
                pos += 2;
            } else {
                in->picture_id = b;
                in->picture_id_bits = 7;
                pos += 1;
            }
        }
        if (xb & 0x40) {
            if (pos >= end)
                return 0;
            in->tl0picidx = p[pos++];
        }
        if (xb & 0x30) {
            in->tk_flags = xb & 0x30;
            if (pos >= end)
                return 0;
            in->tid_byte = p[pos++];
        }
    }
    in->size = pos - in->payload_start;
    x->keyframe = 0;
    x->width = x->height = 0;
    if (in->start && in->partition_id == 0 && pos < end && !(p[pos] & 1)) {
        x->keyframe = 1;
        if (pos + 10 <= end && p[pos + 3] == 0x9d && p[pos + 4] == 0x01 && p[pos + 5] == 0x2a) {
            x->width = (p[pos + 6] | (p[pos + 7] << 8)) & 0x3FFF;
            x->height = (p[pos + 8] | (p[pos + 9] << 8)) & 0x3FFF;
        }
    }
    in->has_vp8 = 1;
    in->vp8_full = 1;
    return 1;
}

/* ---------------------------------------------------------------- Ingress */

typedef struct {
    PyObject_HEAD
    void *srtp;
    srtp_unprotect_fn unprotect;
    PyObject *keep;
    PyObject *by_ssrc;  /* dict: SSRC -> Source (the router's table itself) */
    PyObject *counters; /* dict: "rtp_in" is counted here for packets taken in C */
    PyObject *fallback; /* fallback(plain: bytes, now): the Python path */
    PyObject *rtp_in_key;
    long long rx_packets, rx_errors, native_packets;
    char closed;
} IngressObject;

static int ingress_traverse(IngressObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keep);
    Py_VISIT(self->by_ssrc);
    Py_VISIT(self->counters);
    Py_VISIT(self->fallback);
    return 0;
}

static int ingress_clear(IngressObject *self)
{
    Py_CLEAR(self->keep);
    Py_CLEAR(self->by_ssrc);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->fallback);
    return 0;
}

static void ingress_dealloc(IngressObject *self)
{
    PyObject_GC_UnTrack(self);
    ingress_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ingress_init(IngressObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"by_ssrc",        "counters", "fallback", "srtp_context",
                             "srtp_unprotect", "keep",     NULL};
    unsigned long long ctx = 0, fn = 0;
    PyObject *by_ssrc, *counters, *fallback, *keep = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O|$KKO", kwlist, &PyDict_Type, &by_ssrc,
                                     &PyDict_Type, &counters, &fallback, &ctx, &fn, &keep))
        return -1;
    if (!ctx != !fn) {
        PyErr_SetString(PyExc_ValueError, "srtp_context and srtp_unprotect go together");
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    self->srtp = (void *)(uintptr_t)ctx;
    self->unprotect = (srtp_unprotect_fn)(uintptr_t)fn;
    Py_INCREF(keep);
    Py_XSETREF(self->keep, keep);
    Py_INCREF(by_ssrc);
    Py_XSETREF(self->by_ssrc, by_ssrc);
    Py_INCREF(counters);
    Py_XSETREF(self->counters, counters);
    Py_INCREF(fallback);
    Py_XSETREF(self->fallback, fallback);
    self->closed = 0;
    return 0;
}

static int bump_list(PyObject *list, long long i, long long by)
{
    if (!PyList_CheckExact(list) || i >= PyList_GET_SIZE(list))
        return 0;
    long long v;
    if (!exact_ll(PyList_GET_ITEM(list, i), &v))
        return 0;
    return set_list_ll(list, (Py_ssize_t)i, v + by) < 0 ? -1 : 1;
}

static int call_method(PyObject *obj, PyObject *name, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *r = PyObject_CallMethodObjArgs(obj, name, a, b, c, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Forwarders of `src`: natively where they are steady, else Forwarder.forward with an
 * RtpView and descriptor rebuilt once (Source._rebuild) and the abs-send-time set. */
static int ingress_fanout(SourceObject *src, PyObject *forwarders, Incoming *in, PyObject *data,
                          double now, PyObject *now_obj)
{
    PyObject *pair = NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(forwarders);
    long long v = (long long)(now * (double)(1 << 18)) & 0xFFFFFF;
    in->ast[0] = (unsigned char)(v >> 16);
    in->ast[1] = (unsigned char)(v >> 8);
    in->ast[2] = (unsigned char)v;
    in->has_ast = 1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *f = PyTuple_GET_ITEM(forwarders, i);
        int handled = native_forward_incoming(f, (PyObject *)src, in, now);
        if (handled < 0)
            goto error;
        if (handled)
            continue;
        if (pair == NULL) {
            pair = PyObject_CallMethodOneArg((PyObject *)src, s_rebuild, data);
            if (pair == NULL)
                goto error;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "Source._rebuild must return (pkt, vp8)");
                goto error;
            }
            PyObject *ast = PyBytes_FromStringAndSize((const char *)in->ast, 3);
            if (ast == NULL)
                goto error;
            int r = PyObject_SetAttr(PyTuple_GET_ITEM(pair, 0), s_abs_send_time, ast);
            Py_DECREF(ast);
            if (r < 0)
                goto error;
        }
        PyObject *res = PyObject_CallMethodObjArgs(f, s_forward, (PyObject *)src,
                                                   PyTuple_GET_ITEM(pair, 0),
                                                   PyTuple_GET_ITEM(pair, 1), now_obj, NULL);
        if (res == NULL)
            goto error;
        Py_DECREF(res);
    }
    Py_XDECREF(pair);
    return 0;
error:
    Py_XDECREF(pair);
    return -1;
}

/* The fast path for one decrypted packet: 1 taken, 0 not (the fallback takes it), -1. */
static int ingress_fast(IngressObject *self, const unsigned char *p, Py_ssize_t n, double now,
                        PyObject *now_obj, PyObject *given)
{
    Incoming in;
    Header h;
    Vp8Extra x = {0, 0, 0};
    memset(&in, 0, sizeof(in));
    if (!parse_header(p, n, &in, &h))
        return 0;
    PyObject *key = PyLong_FromLongLong(in.ssrc);
    if (key == NULL)
        return -1;
    PyObject *found = PyDict_GetItemWithError(self->by_ssrc, key); /* borrowed */
    Py_DECREF(key);
    if (found == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyObject_TypeCheck(found, &SourceCoreType))
        return 0;
    SourceObject *src = (SourceObject *)found;
    if (h.pt != src->payload_type || (src->h264 != NULL && src->h264 != Py_None))
        return 0; /* RED (its check), H.264 (its runs), another payload type (dropped) */
    if (in.payload_end == in.payload_start)
        return 0; /* padding only: the forwarders' skip */
    if (src->stats == NULL || !PyObject_TypeCheck(src->stats, &StatsCoreType) ||
        src->nack == NULL || !PyObject_TypeCheck(src->nack, &NackCoreType) ||
        src->cache == NULL || !PyObject_TypeCheck(src->cache, &CacheCoreType) ||
        src->forwarders == NULL || !PyTuple_CheckExact(src->forwarders) ||
        src->tid_bytes == NULL || src->tid_frames == NULL)
        return 0;
    int level = -1;
    if (src->audio_level_ext && h.ext_profile) {
        Py_ssize_t off = 0, len;
        if (!find_extension(p, &h, src->audio_level_ext, &off, &len))
            return 0; /* malformed: the Python path reports it */
        if (len > 0)
            level = p[off];
    }
    if (src->is_vp8 && !parse_vp8(p, &in, &x))
        return 0;
    in.audio_level = level;

    /* From here on the packet is taken: every step below happens. */
    Py_INCREF(src);
    PyObject *data = NULL;
    int r;
    self->native_packets++;
    src->native_packets++;
    if (self->rtp_in_key == NULL) {
        self->rtp_in_key = PyUnicode_InternFromString("rtp_in");
        if (self->rtp_in_key == NULL)
            goto error;
    }
    {
        PyObject *count = PyDict_GetItemWithError(self->counters, self->rtp_in_key);
        long long c = 0;
        if (count == NULL && PyErr_Occurred())
            goto error;
        if (count != NULL && !exact_ll(count, &c)) {
            PyErr_SetString(PyExc_TypeError, "counters['rtp_in'] must be an int");
            goto error;
        }
        PyObject *next = PyLong_FromLongLong(c + 1);
        if (next == NULL || PyDict_SetItem(self->counters, self->rtp_in_key, next) < 0) {
            Py_XDECREF(next);
            goto error;
        }
        Py_DECREF(next);
    }
    PyObject *seq_obj = PyLong_FromLongLong(in.seq);
    if (seq_obj == NULL)
        goto error;
    /* each part is checked again where it is used: Python code may run in between */
    r = PyObject_TypeCheck(src->stats, &StatsCoreType)
            ? stats_add((StatsObject *)src->stats, in.seq, in.timestamp, now)
            : 0;
    if (r == 0) {
        PyObject *ts_obj = PyLong_FromLongLong(in.timestamp);
        r = ts_obj == NULL ? -1 : call_method(src->stats, s_add, seq_obj, ts_obj, now_obj);
        Py_XDECREF(ts_obj);
    }
    if (r >= 0) {
        r = PyObject_TypeCheck(src->nack, &NackCoreType) ? nack_add((NackObject *)src->nack, in.seq)
                                                          : 0;
        if (r == 0)
            r = call_method(src->nack, s_add, seq_obj, now_obj, NULL);
    }
    if (r < 0) {
        Py_DECREF(seq_obj);
        goto error;
    }
    {
        /* len(self.nack), as on_rtp asks: NackGenerator.__len__ is len(self._missing) */
        PyObject *nk = src->nack, *missing = NULL;
        if (PyObject_TypeCheck(nk, &NackCoreType))
            missing = ((NackObject *)nk)->missing;
        Py_ssize_t gaps = missing != NULL && PyDict_CheckExact(missing) ? PyDict_GET_SIZE(missing)
                                                                          : PyObject_Length(nk);
        if (gaps < 0) {
            Py_DECREF(seq_obj);
            goto error;
        }
        if (gaps && src->owner != NULL &&
            call_method(src->owner, s_source_has_missing, (PyObject *)src, NULL, NULL) < 0) {
            Py_DECREF(seq_obj);
            goto error;
        }
    }
    src->packets++;
    src->bytes += n;
    Py_INCREF(now_obj);
    Py_XSETREF(src->last_packet_time, now_obj);
    if (level >= 0) { /* `if level:`: a present, non-empty value */
        src->loudness_sum += 127 - (level & 0x7F);
        src->loudness_packets++;
    }
    if (in.has_vp8) {
        long long tid = in.tk_flags & 0x20 ? in.tid_byte >> 6 : -1;
        if (tid >= 0) {
            if (bump_list(src->tid_bytes, tid, n) < 0 ||
                (in.start && !in.partition_id && bump_list(src->tid_frames, tid, 1) < 0)) {
                Py_DECREF(seq_obj);
                goto error;
            }
        }
        if (x.keyframe) {
            Py_INCREF(now_obj);
            Py_XSETREF(src->last_keyframe_time, now_obj);
            Py_INCREF(seq_obj);
            Py_XSETREF(src->last_keyframe_seq, seq_obj);
            src->keyframe_pending = 0;
            if (x.width) {
                src->width = x.width;
                src->height = x.height;
            }
        }
    }
    if (given != NULL) {
        Py_INCREF(given);
        data = given;
    } else {
        data = PyBytes_FromStringAndSize((const char *)p, n);
    }
    if (data == NULL) {
        Py_DECREF(seq_obj);
        goto error;
    }
    r = PyObject_TypeCheck(src->cache, &CacheCoreType)
            ? cache_store((CacheObject *)src->cache, in.seq, data)
            : 0;
    if (r == 0)
        r = call_method(src->cache, s_store, seq_obj, data, NULL);
    Py_DECREF(seq_obj);
    if (r < 0)
        goto error;
    {
        PyObject *forwarders = src->forwarders;
        if (PyTuple_CheckExact(forwarders) && PyTuple_GET_SIZE(forwarders) > 0) {
            Py_INCREF(forwarders); /* a forwarder may replace the tuple */
            in.data = (const unsigned char *)PyBytes_AS_STRING(data);
            in.data_len = n;
            r = ingress_fanout(src, forwarders, &in, data, now, now_obj);
            Py_DECREF(forwarders);
            if (r < 0)
                goto error;
        }
    }
    Py_DECREF(data);
    Py_DECREF(src);
    return 1;
error:
    Py_XDECREF(data);
    Py_DECREF(src);
    return -1;
}

/* Take one decrypted packet (`given`: it as a bytes object, else NULL). */
static PyObject *ingress_take_plain(IngressObject *self, const unsigned char *p, Py_ssize_t n,
                                    double now, PyObject *now_obj, PyObject *given)
{
    int r = ingress_fast(self, p, n, now, now_obj, given);
    if (r < 0)
        return NULL;
    if (r == 0) {
        PyObject *plain = given;
        if (plain == NULL) {
            plain = PyBytes_FromStringAndSize((const char *)p, n);
            if (plain == NULL)
                return NULL;
        } else {
            Py_INCREF(plain);
        }
        PyObject *res = PyObject_CallFunctionObjArgs(self->fallback, plain, now_obj, NULL);
        Py_DECREF(plain);
        if (res == NULL)
            return NULL;
        Py_DECREF(res);
    }
    Py_RETURN_TRUE;
}

static PyObject *ingress_receive(IngressObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "receive(data, now)");
        return NULL;
    }
    PyObject *now_obj = args[1];
    double now = PyFloat_AsDouble(now_obj);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->srtp == NULL || self->unprotect == NULL) {
        PyErr_SetString(PyExc_ValueError, "receive needs srtp_context and srtp_unprotect");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    unsigned char buf[SRTP_LIMIT + 16];
    int len = (int)view.len;
    if (self->closed || view.len > SRTP_LIMIT) {
        PyBuffer_Release(&view);
        self->rx_errors++;
        Py_RETURN_FALSE;
    }
    memcpy(buf, view.buf, (size_t)len);
    PyBuffer_Release(&view);
    if (self->unprotect(self->srtp, buf, &len) != 0) {
        self->rx_errors++;
        Py_RETURN_FALSE;
    }
    self->rx_packets++;
    return ingress_take_plain(self, buf, len, now, now_obj, NULL);
}

static PyObject *ingress_take(IngressObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "take(plain: bytes, now)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->closed)
        Py_RETURN_FALSE;
    self->rx_packets++;
    return ingress_take_plain(self, (const unsigned char *)PyBytes_AS_STRING(args[0]),
                              PyBytes_GET_SIZE(args[0]), now, args[1], args[0]);
}

/* The datagram's source address as Python's socket module gives it. */
static PyObject *address_tuple(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(v4->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(v6->sin6_port), ntohl(v6->sin6_flowinfo),
                             v6->sin6_scope_id);
    }
    return Py_BuildValue("(si)", "", 0);
}

/*
 * drain(fd, other, limit): read up to `limit` datagrams from the non-blocking socket
 * `fd`; SRTP media (RTP, not RTCP) is unprotected and taken in here, each with `now`
 * from CLOCK_MONOTONIC (the event loop's clock), anything else (STUN, DTLS, SRTCP) goes
 * to other(data, addr). Returns the datagrams read; raises OSError as recvfrom would
 * (not for "nothing left").
 */
static PyObject *ingress_drain(IngressObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "drain(fd, other, limit)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    long limit = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *other = args[1];
    if (self->srtp == NULL || self->unprotect == NULL) {
        PyErr_SetString(PyExc_ValueError, "drain needs srtp_context and srtp_unprotect");
        return NULL;
    }
    unsigned char buf[2048 + 16];
    long count = 0;
    while (count < limit && !self->closed) {
        struct sockaddr_storage ss;
        socklen_t alen = sizeof(ss);
        ssize_t n = recvfrom(fd, buf, 2048, MSG_DONTWAIT, (struct sockaddr *)&ss, &alen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        count++;
        if (n >= 12 && buf[0] > 127 && buf[0] < 192 && !(buf[1] > 191 && buf[1] < 224)) {
            int len = (int)n;
            if (n > SRTP_LIMIT || self->unprotect(self->srtp, buf, &len) != 0) {
                self->rx_errors++;
                continue;
            }
            self->rx_packets++;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
            PyObject *now_obj = PyFloat_FromDouble(now);
            if (now_obj == NULL)
                return NULL;
            PyObject *r = ingress_take_plain(self, buf, len, now, now_obj, NULL);
            Py_DECREF(now_obj);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            continue;
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)buf, n);
        PyObject *addr = data == NULL ? NULL : address_tuple(&ss);
        PyObject *r = addr == NULL ? NULL : PyObject_CallFunctionObjArgs(other, data, addr, NULL);
        Py_XDECREF(data);
        Py_XDECREF(addr);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    return PyLong_FromLong(count);
}

static PyObject *ingress_close(IngressObject *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    ingress_clear(self);
    Py_RETURN_NONE;
}

static PyMethodDef ingress_methods[] = {
    {"receive", (PyCFunction)(void (*)(void))ingress_receive, METH_FASTCALL,
     "receive(data, now) -> bool: unprotect one SRTP packet and take it in (natively, or "
     "through fallback(plain, now)); False when it could not be unprotected (counted)."},
    {"drain", (PyCFunction)(void (*)(void))ingress_drain, METH_FASTCALL,
     "drain(fd, other, limit) -> int: read up to `limit` datagrams from the socket; SRTP "
     "media is taken in here, anything else goes to other(data, addr)."},
    {"take", (PyCFunction)(void (*)(void))ingress_take, METH_FASTCALL,
     "take(plain, now) -> bool: take one decrypted RTP packet in, as receive does after "
     "unprotect; False once closed."},
    {"close", (PyCFunction)ingress_close, METH_NOARGS,
     "Refuse every packet from now on; drop the references (idempotent)."},
    {NULL},
};

static PyMemberDef ingress_members[] = {
    {"rx_packets", T_LONGLONG, offsetof(IngressObject, rx_packets), 0,
     "packets unprotected (either path)"},
    {"rx_errors", T_LONGLONG, offsetof(IngressObject, rx_errors), 0,
     "packets that could not be unprotected"},
    {"native_packets", T_LONGLONG, offsetof(IngressObject, native_packets), 0,
     "packets taken in natively"},
    {"closed", T_BOOL, offsetof(IngressObject, closed), READONLY, "close() was called"},
    {NULL},
};

static PyTypeObject IngressType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.Ingress",
    .tp_doc = "Ingress(by_ssrc, counters, fallback, *, srtp_context=0, srtp_unprotect=0, "
              "keep=None): one publish transport's SRTP unprotect and steady-state ingress.",
    .tp_basicsize = sizeof(IngressObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ingress_init,
    .tp_dealloc = (destructor)ingress_dealloc,
    .tp_traverse = (traverseproc)ingress_traverse,
    .tp_clear = (inquiry)ingress_clear,
    .tp_methods = ingress_methods,
    .tp_members = ingress_members,
};

/* ----------------------------------------------------------------- module */

#define INTERN(var, text)                                                                     \
    do {                                                                                      \
        var = PyUnicode_InternFromString(text);                                               \
        if (var == NULL)                                                                      \
            return -1;                                                                        \
    } while (0)

int ingress_add_types(PyObject *m)
{
    INTERN(s_add, "add");
    INTERN(s_store, "store");
    INTERN(s_source_has_missing, "source_has_missing");
    INTERN(s_rebuild, "_rebuild");
    INTERN(s_forward, "forward");
    INTERN(s_abs_send_time, "abs_send_time");
    PyTypeObject *types[] = {&StatsCoreType, &NackCoreType, &CacheCoreType, &SourceCoreType,
                             &IngressType};
    const char *names[] = {"ReceiveStatsCore", "NackCore", "PacketCacheCore", "SourceCore",
                           "Ingress"};
    for (int i = 0; i < 5; i++) {
        if (PyType_Ready(types[i]) < 0 ||
            PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0)
            return -1;
    }
    return 0;
}
