/*
 * sfu._native, part three: the per-packet part of the send-side estimator in C.
 *
 * FeedbackPath is sfu/gcc/feedback_path.py's PyFeedbackPath: per transport-cc feedback,
 * the packets above the highest sequence number seen go through the receiver's stall
 * detector (sfu/gcc/stall.py), the acknowledged and sent rates
 * (sfu/gcc/acknowledged.py), the queuing delay (sfu/gcc/queue_delay.py), the send-time
 * groups (sfu/gcc/inter_arrival.py) and the loss count outside probe spans. Each part
 * below follows its Python module line for line (the same operations in the same order,
 * so the same doubles: the build turns floating-point contraction off);
 * tests/unit/test_feedback_path.py holds the two to the same outputs and answers. The
 * constants are the Python classes' defaults as the estimator constructs them.
 *
 * Trendline is sfu/gcc/trendline.py's TrendlineDetector (the delay trend and the overuse
 * detector, once per send-time group), with its TrendlineSettings; update_all takes the
 * group deltas FeedbackPath.update returns.
 */
#include "_native.h"
#include <structmember.h>

#include <math.h>
#include <string.h>

/* AcknowledgedRate() */
#define ACKED_WINDOW 0.5
#define ACKED_STALE 2.0
/* QueueDelay(standing_queue) */
#define QUEUE_RECENT 0.1
#define QUEUE_BASELINE 10.0
#define QUEUE_STALE 1.0
#define RESET_GAP 5.0
/* StallDetector(hold=stall_hold) */
#define STALL_GAP 0.08
#define STALL_COMPRESSION 2.0
#define STALL_MIN_PACKETS 3
#define STALL_MIN_SEND_SPAN 0.05
#define STALL_JUDGING 0.3
#define STALL_HELD 0.5
/* InterArrival() */
#define GROUP_LENGTH 0.005
#define BURST_DELTA 0.005
#define MAX_BURST 0.1
#define GROUP_RESET_GAP 3.0

/* ------------------------------------------------------------ a deque of (a, b) pairs */

typedef struct {
    double *a, *b;
    Py_ssize_t head, len, cap; /* cap: a power of two, 0 before the first push */
} Ring;

static void ring_free(Ring *r)
{
    PyMem_Free(r->a);
    PyMem_Free(r->b);
    memset(r, 0, sizeof(*r));
}

static inline Py_ssize_t ring_index(const Ring *r, Py_ssize_t i)
{
    return (r->head + i) & (r->cap - 1);
}

static int ring_push(Ring *r, double a, double b)
{
    if (r->len == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 64;
        double *na = PyMem_Malloc(cap * sizeof(double));
        double *nb = PyMem_Malloc(cap * sizeof(double));
        if (na == NULL || nb == NULL) {
            PyMem_Free(na);
            PyMem_Free(nb);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < r->len; i++) {
            na[i] = r->a[ring_index(r, i)];
            nb[i] = r->b[ring_index(r, i)];
        }
        PyMem_Free(r->a);
        PyMem_Free(r->b);
        r->a = na;
        r->b = nb;
        r->head = 0;
        r->cap = cap;
    }
    Py_ssize_t i = ring_index(r, r->len);
    r->a[i] = a;
    r->b[i] = b;
    r->len++;
    return 0;
}

#define RING_A(r, i) ((r)->a[ring_index((r), (i))])
#define RING_B(r, i) ((r)->b[ring_index((r), (i))])

static inline void ring_pop_front(Ring *r)
{
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
}

static inline void ring_clear(Ring *r)
{
    r->head = 0;
    r->len = 0;
}

/* ------------------------------------------------------------ ReceiverClock */

typedef struct {
    double stale, newest_arrival, last_feedback;
    char has_feedback;
} Clock;

static void clock_init(Clock *c, double stale)
{
    c->stale = stale;
    c->newest_arrival = -INFINITY;
    c->has_feedback = 0;
    c->last_feedback = 0.0;
}

/* 1 when the receiver's clock started over */
static inline int clock_arrived(Clock *c, double arrival)
{
    int reset = arrival < c->newest_arrival - RESET_GAP;
    if (reset)
        c->newest_arrival = arrival;
    else if (arrival > c->newest_arrival)
        c->newest_arrival = arrival;
    return reset;
}

static inline int clock_fresh(const Clock *c, double now)
{
    return c->has_feedback && now - c->last_feedback <= c->stale;
}

/* ------------------------------------------------------------ the object */

typedef struct {
    PyObject_HEAD
    long long highest;
    /* StallDetector */
    double stall_hold, stall_until, judging_until, last_arrival, last_delay;
    char has_last_arrival;
    Ring bunch; /* (send_time, arrival) */
    double bunch_min_send, bunch_max_send;
    long long stalls;
    /* AcknowledgedRate */
    Clock acked_clock;
    Ring arrived, sent; /* (arrival, size), (send_time, size) */
    long long arrived_bytes, sent_bytes;
    double first_arrival, first_send;
    char has_first_arrival, has_first_send;
    /* QueueDelay */
    double standing_queue;
    Clock queue_clock;
    Ring delays, minimum; /* (arrival, delay), (send_time, delay) */
    /* InterArrival: the current and previous groups */
    char has_current, has_previous;
    double cur_first_send, cur_last_send, cur_first_arrival, cur_last_arrival;
    double prev_last_send, prev_last_arrival;
    long long group_resets;
} PathObject;

static PyObject *s_seq, *s_send_time, *s_size, *s_arrival;

static int path_init(PathObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"standing_queue", "stall_hold", NULL};
    double standing_queue = 0.08, stall_hold = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|dd", kwlist, &standing_queue, &stall_hold))
        return -1;
    ring_free(&self->bunch);
    ring_free(&self->arrived);
    ring_free(&self->sent);
    ring_free(&self->delays);
    ring_free(&self->minimum);
    self->highest = -1;
    self->stall_hold = stall_hold;
    self->stall_until = self->judging_until = -1e9;
    self->has_last_arrival = 0;
    self->last_arrival = self->last_delay = 0.0;
    self->stalls = 0;
    clock_init(&self->acked_clock, ACKED_STALE);
    self->arrived_bytes = self->sent_bytes = 0;
    self->has_first_arrival = self->has_first_send = 0;
    self->standing_queue = standing_queue;
    clock_init(&self->queue_clock, QUEUE_STALE);
    self->has_current = self->has_previous = 0;
    self->group_resets = 0;
    return 0;
}

static void path_dealloc(PathObject *self)
{
    ring_free(&self->bunch);
    ring_free(&self->arrived);
    ring_free(&self->sent);
    ring_free(&self->delays);
    ring_free(&self->minimum);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------ the parts, per packet */

/* StallDetector._judge */
static int stall_judge(PathObject *self)
{
    Ring *b = &self->bunch;
    if (b->len < STALL_MIN_PACKETS)
        return 0;
    double send_span = self->bunch_max_send - self->bunch_min_send;
    double arrival_span = RING_B(b, b->len - 1) - RING_B(b, 0);
    if (send_span >= STALL_MIN_SEND_SPAN && send_span > STALL_COMPRESSION * arrival_span) {
        self->stalls++;
        ring_clear(b);
        return 1;
    }
    return 0;
}

static int bunch_start(PathObject *self, double send, double arrival)
{
    ring_clear(&self->bunch);
    self->bunch_min_send = self->bunch_max_send = send;
    return ring_push(&self->bunch, send, arrival);
}

/* One received packet through StallDetector._scan's loop body; *found set on a stall. */
static int stall_packet(PathObject *self, double send, double arrival, int *found)
{
    double delay = arrival - send;
    double last = self->last_arrival;
    if (self->has_last_arrival && arrival - last >= STALL_GAP) {
        if (bunch_start(self, send, arrival) < 0)
            return -1;
        if (delay - self->last_delay >= STALL_HELD * (arrival - last)) {
            self->stalls++;
            ring_clear(&self->bunch);
            *found = 1;
        }
    }
    else if (self->bunch.len && arrival - RING_B(&self->bunch, 0) <= STALL_GAP / 2) {
        if (ring_push(&self->bunch, send, arrival) < 0)
            return -1;
        if (send < self->bunch_min_send)
            self->bunch_min_send = send;
        if (send > self->bunch_max_send)
            self->bunch_max_send = send;
        if (stall_judge(self))
            *found = 1;
    }
    else {
        ring_clear(&self->bunch);
    }
    if (!self->has_last_arrival || arrival >= last) {
        self->has_last_arrival = 1;
        self->last_arrival = arrival;
        self->last_delay = delay;
    }
    return 0;
}

/* AcknowledgedRate.update's loop body */
static int acked_packet(PathObject *self, double send, long long size, int received, double arrival)
{
    if (ring_push(&self->sent, send, (double)size) < 0)
        return -1;
    self->sent_bytes += size;
    if (!self->has_first_send) {
        self->has_first_send = 1;
        self->first_send = send;
    }
    if (received) {
        if (clock_arrived(&self->acked_clock, arrival)) {
            ring_clear(&self->arrived);
            self->arrived_bytes = 0;
            self->has_first_arrival = 0;
        }
        if (ring_push(&self->arrived, arrival, (double)size) < 0)
            return -1;
        self->arrived_bytes += size;
        if (!self->has_first_arrival) {
            self->has_first_arrival = 1;
            self->first_arrival = arrival;
        }
    }
    return 0;
}

static void acked_trim(PathObject *self)
{
    Ring *r = &self->arrived;
    if (r->len) {
        double newest = self->acked_clock.newest_arrival;
        while (r->len && RING_A(r, 0) < newest - ACKED_WINDOW) {
            self->arrived_bytes -= (long long)RING_B(r, 0);
            ring_pop_front(r);
        }
    }
    r = &self->sent;
    if (r->len) {
        double newest_send = RING_A(r, r->len - 1);
        while (r->len && RING_A(r, 0) < newest_send - ACKED_WINDOW) {
            self->sent_bytes -= (long long)RING_B(r, 0);
            ring_pop_front(r);
        }
    }
}

/* QueueDelay.update's loop body (a received packet) */
static int queue_packet(PathObject *self, double send, double arrival)
{
    if (clock_arrived(&self->queue_clock, arrival)) {
        ring_clear(&self->delays);
        ring_clear(&self->minimum);
    }
    double delay = arrival - send;
    if (ring_push(&self->delays, arrival, delay) < 0)
        return -1;
    Ring *m = &self->minimum;
    while (m->len && RING_B(m, m->len - 1) >= delay)
        m->len--;
    return ring_push(m, send, delay);
}

static void queue_trim(PathObject *self)
{
    Ring *d = &self->delays;
    double newest = self->queue_clock.newest_arrival;
    while (d->len && RING_A(d, 0) < newest - QUEUE_RECENT)
        ring_pop_front(d);
    Ring *m = &self->minimum;
    if (m->len) {
        double newest_send = RING_A(m, m->len - 1);
        while (m->len && RING_A(m, 0) < newest_send - QUEUE_BASELINE)
            ring_pop_front(m);
    }
}

/* InterArrival.add; appends (send_delta, arrival_delta, arrival) to deltas when the
 * packet completes a group (its size delta, which nothing reads, is not kept) */
static int inter_packet(PathObject *self, double send, double arrival, PyObject *deltas)
{
    if (!self->has_current) {
        self->has_current = 1;
        self->cur_first_send = self->cur_last_send = send;
        self->cur_first_arrival = self->cur_last_arrival = arrival;
        return 0;
    }
    if (send < self->cur_first_send)
        return 0;
    /* _new_group: not within a burst, and sent after the group's length */
    double arrival_delta = arrival - self->cur_last_arrival;
    double send_delta = send - self->cur_last_send;
    int in_burst;
    if (send_delta == 0)
        in_burst = 1;
    else {
        double propagation = arrival_delta - send_delta;
        in_burst = propagation < 0 && arrival_delta <= BURST_DELTA &&
                   arrival - self->cur_first_arrival < MAX_BURST;
    }
    if (in_burst || !(send - self->cur_first_send > GROUP_LENGTH)) {
        if (send > self->cur_last_send)
            self->cur_last_send = send;
        if (arrival > self->cur_last_arrival)
            self->cur_last_arrival = arrival;
        return 0;
    }
    int had_previous = self->has_previous, delta = 0;
    if (had_previous) {
        double group_send = self->cur_last_send - self->prev_last_send;
        double group_arrival = self->cur_last_arrival - self->prev_last_arrival;
        if (group_arrival < 0 || group_arrival > GROUP_RESET_GAP) {
            self->group_resets++;
            self->has_previous = 0;
        }
        else {
            PyObject *t = Py_BuildValue("(ddd)", group_send, group_arrival, self->cur_last_arrival);
            if (t == NULL)
                return -1;
            int rc = PyList_Append(deltas, t);
            Py_DECREF(t);
            if (rc < 0)
                return -1;
            delta = 1;
        }
    }
    if (delta || !had_previous) {
        self->has_previous = 1;
        self->prev_last_send = self->cur_last_send;
        self->prev_last_arrival = self->cur_last_arrival;
    }
    self->cur_first_send = self->cur_last_send = send;
    self->cur_first_arrival = self->cur_last_arrival = arrival;
    return 0;
}

/* ------------------------------------------------------------ update */

typedef struct {
    long long seq, size;
    double send, arrival;
    int received;
} Packet;

static int read_packet(PyObject *r, Packet *p)
{
    PyObject *v = PyObject_GetAttr(r, s_seq);
    if (v == NULL)
        return -1;
    p->seq = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (p->seq == -1 && PyErr_Occurred())
        return -1;
    v = PyObject_GetAttr(r, s_send_time);
    if (v == NULL)
        return -1;
    p->send = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (p->send == -1.0 && PyErr_Occurred())
        return -1;
    v = PyObject_GetAttr(r, s_size);
    if (v == NULL)
        return -1;
    p->size = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (p->size == -1 && PyErr_Occurred())
        return -1;
    v = PyObject_GetAttr(r, s_arrival);
    if (v == NULL)
        return -1;
    p->received = v != Py_None;
    p->arrival = p->received ? PyFloat_AsDouble(v) : 0.0;
    Py_DECREF(v);
    if (p->received && p->arrival == -1.0 && PyErr_Occurred())
        return -1;
    return 0;
}

/* spans: a sequence of (a, b) pairs, copied into arrays (at most a few) */
#define MAX_SPANS 16

static Py_ssize_t read_spans(PyObject *spans, double *a, double *b)
{
    PyObject *seq = PySequence_Fast(spans, "spans must be a sequence of (start, end) pairs");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_SPANS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d probe spans", MAX_SPANS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "dd", &a[i], &b[i])) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return n;
}

static PyObject *path_update(PathObject *self, PyObject *args)
{
    PyObject *results, *spans_obj = NULL;
    double now;
    if (!PyArg_ParseTuple(args, "Od|O", &results, &now, &spans_obj))
        return NULL;
    double span_a[MAX_SPANS], span_b[MAX_SPANS];
    Py_ssize_t n_spans = 0;
    if (spans_obj != NULL && (n_spans = read_spans(spans_obj, span_a, span_b)) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(results, "results must be a sequence of PacketResult");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *new = PyList_New(0), *deltas = PyList_New(0);
    if (new == NULL || deltas == NULL)
        goto error;
    /* StallDetector.update: suspect before the scan */
    int suspect = self->bunch.len > 0, found = 0;
    long long highest = self->highest, lost = 0;
    long long out_count = 0, out_lost = 0, out_bytes = 0;
    double newest = 0.0, out_first = 0.0, out_last = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PySequence_Fast_GET_ITEM(seq, i);
        Packet p;
        if (read_packet(r, &p) < 0)
            goto error;
        if (p.seq <= self->highest)
            continue;
        if (PyList_Append(new, r) < 0)
            goto error;
        if (PyList_GET_SIZE(new) == 1 || p.seq > highest)
            highest = p.seq;
        if (PyList_GET_SIZE(new) == 1 || p.send > newest)
            newest = p.send;
        if (p.received && stall_packet(self, p.send, p.arrival, &found) < 0)
            goto error;
        if (acked_packet(self, p.send, p.size, p.received, p.arrival) < 0)
            goto error;
        if (p.received) {
            if (queue_packet(self, p.send, p.arrival) < 0 ||
                inter_packet(self, p.send, p.arrival, deltas) < 0)
                goto error;
        }
        else
            lost++;
        int inside = 0;
        for (Py_ssize_t k = 0; k < n_spans && !inside; k++)
            inside = span_a[k] <= p.send && p.send < span_b[k];
        if (!inside) {
            if (out_count == 0)
                out_first = out_last = p.send;
            out_count++;
            out_bytes += p.size;
            out_lost += !p.received;
            if (p.send > out_last)
                out_last = p.send;
        }
    }
    Py_DECREF(seq);
    seq = NULL;
    if (PyList_GET_SIZE(new) == 0) {
        Py_DECREF(new);
        Py_DECREF(deltas);
        Py_RETURN_NONE;
    }
    self->highest = highest;
    /* StallDetector.update's verdict */
    if (found) {
        self->stall_until = now + self->stall_hold;
        self->judging_until = -1e9;
    }
    else if (self->bunch.len && !suspect)
        self->judging_until = now + STALL_JUDGING;
    else if (suspect && !self->bunch.len)
        self->judging_until = -1e9;
    /* the windows' ends: AcknowledgedRate and QueueDelay after their loops */
    self->acked_clock.has_feedback = 1;
    self->acked_clock.last_feedback = now;
    acked_trim(self);
    self->queue_clock.has_feedback = 1;
    self->queue_clock.last_feedback = now;
    queue_trim(self);
    PyObject *outside;
    if (out_count)
        outside = Py_BuildValue("(LLLdd)", out_count, out_lost, out_bytes, out_first, out_last);
    else
        outside = Py_NewRef(Py_None);
    if (outside == NULL)
        goto error;
    return Py_BuildValue("(NLdNNO)", new, lost, newest, deltas, outside, found ? Py_True : Py_False);
error:
    Py_XDECREF(seq);
    Py_XDECREF(new);
    Py_XDECREF(deltas);
    return NULL;
}

/* ------------------------------------------------------------ queries */

static int parse_now(PyObject *arg, double *now)
{
    *now = PyFloat_AsDouble(arg);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* AcknowledgedRate._span */
static inline double acked_span(int has_first, double first, double newest)
{
    if (!has_first)
        return ACKED_WINDOW;
    double span = newest - first;
    if (span > ACKED_WINDOW)
        span = ACKED_WINDOW;
    return span < 0.1 ? 0.1 : span;
}

static PyObject *path_acked_rate(PathObject *self, PyObject *arg)
{
    double now;
    if (parse_now(arg, &now) < 0)
        return NULL;
    if (!self->arrived.len || !clock_fresh(&self->acked_clock, now))
        Py_RETURN_NONE;
    double newest = self->acked_clock.newest_arrival;
    return PyFloat_FromDouble((double)(self->arrived_bytes * 8) /
                              acked_span(self->has_first_arrival, self->first_arrival, newest));
}

static PyObject *path_sent_rate(PathObject *self, PyObject *arg)
{
    double now;
    if (parse_now(arg, &now) < 0)
        return NULL;
    if (!self->sent.len || !clock_fresh(&self->acked_clock, now))
        Py_RETURN_NONE;
    double newest = RING_A(&self->sent, self->sent.len - 1);
    return PyFloat_FromDouble((double)(self->sent_bytes * 8) /
                              acked_span(self->has_first_send, self->first_send, newest));
}

static PyObject *path_recent_rate(PathObject *self, PyObject *args)
{
    double now, window;
    if (!PyArg_ParseTuple(args, "dd", &now, &window))
        return NULL;
    Ring *r = &self->arrived;
    if (!r->len || !clock_fresh(&self->acked_clock, now))
        Py_RETURN_NONE;
    double newest = self->acked_clock.newest_arrival, first = newest;
    long long total = 0, count = 0, first_size = 0;
    for (Py_ssize_t i = r->len - 1; i >= 0; i--) {
        double arrival = RING_A(r, i);
        if (arrival < newest - window)
            break;
        long long size = (long long)RING_B(r, i);
        total += size;
        count++;
        first = arrival;
        first_size = size;
    }
    if (count < 4 || newest - first < 0.08)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)((total - first_size) * 8) / (newest - first));
}

static PyObject *path_acked_fresh(PathObject *self, PyObject *arg)
{
    double now;
    if (parse_now(arg, &now) < 0)
        return NULL;
    return PyBool_FromLong(clock_fresh(&self->acked_clock, now));
}

static PyObject *path_newest_send(PathObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->sent.len)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(RING_A(&self->sent, self->sent.len - 1));
}

/* QueueDelay.delay: 1 and *delay set, or 0 (None) */
static int queue_delay(PathObject *self, double now, double *delay)
{
    Ring *d = &self->delays;
    if (!d->len || !self->minimum.len || !clock_fresh(&self->queue_clock, now))
        return 0;
    double least = RING_B(d, 0);
    for (Py_ssize_t i = 1; i < d->len; i++) {
        double v = RING_B(d, i);
        if (v < least)
            least = v;
    }
    *delay = least - RING_B(&self->minimum, 0);
    return 1;
}

static PyObject *path_queue_delay(PathObject *self, PyObject *arg)
{
    double now, delay;
    if (parse_now(arg, &now) < 0)
        return NULL;
    if (!queue_delay(self, now, &delay))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(delay);
}

static PyObject *path_queue_standing(PathObject *self, PyObject *arg)
{
    double now, delay;
    if (parse_now(arg, &now) < 0)
        return NULL;
    return PyBool_FromLong(queue_delay(self, now, &delay) && delay >= self->standing_queue);
}

static PyObject *path_stall_holding(PathObject *self, PyObject *arg)
{
    double now;
    if (parse_now(arg, &now) < 0)
        return NULL;
    double until = self->stall_until > self->judging_until ? self->stall_until : self->judging_until;
    return PyBool_FromLong(now < until);
}

static PyObject *path_stall_suspect(PathObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->bunch.len > 0);
}

static PyMethodDef path_methods[] = {
    {"update", (PyCFunction)path_update, METH_VARARGS,
     "update(results, now, spans=()) -> FeedbackBatch fields as a tuple, or None"},
    {"acked_rate", (PyCFunction)path_acked_rate, METH_O, "AcknowledgedRate.rate(now)"},
    {"sent_rate", (PyCFunction)path_sent_rate, METH_O, "AcknowledgedRate.sent_rate(now)"},
    {"recent_rate", (PyCFunction)path_recent_rate, METH_VARARGS,
     "AcknowledgedRate.recent_rate(now, window)"},
    {"acked_fresh", (PyCFunction)path_acked_fresh, METH_O, "AcknowledgedRate.fresh(now)"},
    {"newest_send", (PyCFunction)path_newest_send, METH_NOARGS,
     "AcknowledgedRate.newest_send()"},
    {"queue_delay", (PyCFunction)path_queue_delay, METH_O, "QueueDelay.delay(now)"},
    {"queue_standing", (PyCFunction)path_queue_standing, METH_O, "QueueDelay.standing(now)"},
    {"stall_holding", (PyCFunction)path_stall_holding, METH_O, "StallDetector.holding(now)"},
    {"stall_suspect", (PyCFunction)path_stall_suspect, METH_NOARGS, "StallDetector.suspect"},
    {NULL},
};

static PyMemberDef path_members[] = {
    {"highest", T_LONGLONG, offsetof(PathObject, highest), 0,
     "the highest sequence number reported so far (-1: none)"},
    {"stalls", T_LONGLONG, offsetof(PathObject, stalls), READONLY, "StallDetector.stalls"},
    {"group_resets", T_LONGLONG, offsetof(PathObject, group_resets), READONLY,
     "InterArrival.resets"},
    {NULL},
};

static PyTypeObject PathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.FeedbackPath",
    .tp_basicsize = sizeof(PathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The send-side estimator's per-packet part (sfu/gcc/feedback_path.py) in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)path_init,
    .tp_dealloc = (destructor)path_dealloc,
    .tp_methods = path_methods,
    .tp_members = path_members,
};

/* ------------------------------------------------------------ Trendline */

enum { NORMAL, OVERUSING, UNDERUSING };
static PyObject *s_state_names[3];

typedef struct {
    PyObject_HEAD
    /* TrendlineSettings */
    long long window, min_deltas;
    double smoothing, gain, k_up, k_down, min_threshold, max_threshold, max_adapt_offset,
        overuse_time;
    /* state */
    int state;
    double threshold, trend, modified_trend;
    long long deltas, over_count;
    double first_arrival, accumulated, smoothed, time_over, previous_trend,
        last_threshold_update;
    char has_first_arrival, has_last_threshold_update;
    double *hx, *hy; /* the history: a ring of `window` points */
    long long head, len;
} TrendObject;

static int read_setting(PyObject *settings, const char *name, double *out)
{
    PyObject *v = PyObject_GetAttrString(settings, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int read_int_setting(PyObject *settings, const char *name, long long *out)
{
    PyObject *v = PyObject_GetAttrString(settings, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int trend_init(TrendObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"settings", NULL};
    PyObject *settings;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &settings))
        return -1;
    double initial;
    if (read_int_setting(settings, "window", &self->window) < 0 ||
        read_int_setting(settings, "min_deltas", &self->min_deltas) < 0 ||
        read_setting(settings, "smoothing", &self->smoothing) < 0 ||
        read_setting(settings, "gain", &self->gain) < 0 ||
        read_setting(settings, "initial_threshold", &initial) < 0 ||
        read_setting(settings, "k_up", &self->k_up) < 0 ||
        read_setting(settings, "k_down", &self->k_down) < 0 ||
        read_setting(settings, "min_threshold", &self->min_threshold) < 0 ||
        read_setting(settings, "max_threshold", &self->max_threshold) < 0 ||
        read_setting(settings, "max_adapt_offset", &self->max_adapt_offset) < 0 ||
        read_setting(settings, "overuse_time", &self->overuse_time) < 0)
        return -1;
    if (self->window < 2 || self->window > 10000) {
        PyErr_SetString(PyExc_ValueError, "trendline window must be 2..10000 groups");
        return -1;
    }
    PyMem_Free(self->hx);
    PyMem_Free(self->hy);
    self->hx = PyMem_Malloc((size_t)self->window * sizeof(double));
    self->hy = PyMem_Malloc((size_t)self->window * sizeof(double));
    if (self->hx == NULL || self->hy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->state = NORMAL;
    self->threshold = initial;
    self->trend = self->modified_trend = 0.0;
    self->deltas = self->over_count = 0;
    self->has_first_arrival = self->has_last_threshold_update = 0;
    self->accumulated = self->smoothed = 0.0;
    self->time_over = -1.0;
    self->previous_trend = 0.0;
    self->head = self->len = 0;
    return 0;
}

static void trend_dealloc(TrendObject *self)
{
    PyMem_Free(self->hx);
    PyMem_Free(self->hy);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define HX(self, i) ((self)->hx[((self)->head + (i)) % (self)->window])
#define HY(self, i) ((self)->hy[((self)->head + (i)) % (self)->window])

/* trendline._slope over the history; 0 when the denominator is 0 (None) */
static int trend_slope(TrendObject *self, double *slope)
{
    long long n = self->len;
    double sum_x = 0.0, sum_y = 0.0;
    for (long long i = 0; i < n; i++) {
        sum_x += HX(self, i);
        sum_y += HY(self, i);
    }
    double mean_x = sum_x / n, mean_y = sum_y / n;
    double numerator = 0.0, denominator = 0.0;
    for (long long i = 0; i < n; i++) {
        double dx = HX(self, i) - mean_x;
        numerator += dx * (HY(self, i) - mean_y);
        denominator += dx * dx;
    }
    if (denominator == 0.0)
        return 0;
    *slope = numerator / denominator;
    return 1;
}

static void trend_update_threshold(TrendObject *self, double modified, double now_ms)
{
    double last = self->has_last_threshold_update ? self->last_threshold_update : now_ms;
    double magnitude = fabs(modified);
    if (magnitude > self->threshold + self->max_adapt_offset) {
        self->has_last_threshold_update = 1;
        self->last_threshold_update = now_ms;
        return;
    }
    double k = magnitude < self->threshold ? self->k_down : self->k_up;
    double elapsed = now_ms - last;
    if (elapsed > 100.0)
        elapsed = 100.0;
    self->threshold += k * (magnitude - self->threshold) * elapsed;
    double t = self->threshold > self->min_threshold ? self->threshold : self->min_threshold;
    self->threshold = t < self->max_threshold ? t : self->max_threshold;
    self->has_last_threshold_update = 1;
    self->last_threshold_update = now_ms;
}

static void trend_detect(TrendObject *self, double trend, double send_delta_ms, double now_ms)
{
    if (self->deltas < 2) {
        self->state = NORMAL;
        return;
    }
    long long count = self->deltas < self->min_deltas ? self->deltas : self->min_deltas;
    double modified = (double)count * trend * self->gain;
    self->modified_trend = modified;
    if (modified > self->threshold) {
        if (self->time_over == -1.0)
            self->time_over = send_delta_ms / 2;
        else
            self->time_over += send_delta_ms;
        self->over_count++;
        if (self->time_over > self->overuse_time && self->over_count > 1) {
            if (trend >= self->previous_trend) {
                self->time_over = 0.0;
                self->over_count = 0;
                self->state = OVERUSING;
            }
        }
    }
    else if (modified < -self->threshold) {
        self->time_over = -1.0;
        self->over_count = 0;
        self->state = UNDERUSING;
    }
    else {
        self->time_over = -1.0;
        self->over_count = 0;
        self->state = NORMAL;
    }
    self->previous_trend = trend;
    trend_update_threshold(self, modified, now_ms);
}

static void trend_one(TrendObject *self, double send_delta, double arrival_delta, double arrival)
{
    double delta_ms = (arrival_delta - send_delta) * 1000.0;
    double arrival_ms = arrival * 1000.0;
    self->deltas = self->deltas + 1 < 1000 ? self->deltas + 1 : 1000;
    if (!self->has_first_arrival) {
        self->has_first_arrival = 1;
        self->first_arrival = arrival_ms;
    }
    self->accumulated += delta_ms;
    self->smoothed = self->smoothing * self->smoothed + (1 - self->smoothing) * self->accumulated;
    if (self->len == self->window) { /* popleft */
        self->head = (self->head + 1) % self->window;
        self->len--;
    }
    HX(self, self->len) = arrival_ms - self->first_arrival;
    HY(self, self->len) = self->smoothed;
    self->len++;
    double trend = self->previous_trend, slope;
    if (self->len == self->window && trend_slope(self, &slope))
        trend = slope;
    self->trend = trend;
    trend_detect(self, trend, send_delta * 1000.0, arrival_ms);
}

static PyObject *trend_state_of(TrendObject *self)
{
    return Py_NewRef(s_state_names[self->state]);
}

static PyObject *trend_update(TrendObject *self, PyObject *args)
{
    double send_delta, arrival_delta, arrival;
    if (!PyArg_ParseTuple(args, "ddd", &send_delta, &arrival_delta, &arrival))
        return NULL;
    trend_one(self, send_delta, arrival_delta, arrival);
    return trend_state_of(self);
}

static PyObject *trend_update_all(TrendObject *self, PyObject *deltas)
{
    PyObject *seq = PySequence_Fast(deltas, "deltas must be a sequence of 3-tuples");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        double send_delta, arrival_delta, arrival;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "ddd", &send_delta,
                              &arrival_delta, &arrival)) {
            Py_DECREF(seq);
            return NULL;
        }
        trend_one(self, send_delta, arrival_delta, arrival);
    }
    Py_DECREF(seq);
    return trend_state_of(self);
}

static PyObject *trend_get_state(TrendObject *self, void *closure)
{
    return trend_state_of(self);
}

static PyMethodDef trend_methods[] = {
    {"update", (PyCFunction)trend_update, METH_VARARGS,
     "update(send_delta, arrival_delta, arrival) -> state (TrendlineDetector.update)"},
    {"update_all", (PyCFunction)trend_update_all, METH_O,
     "update_all(deltas) -> state: update() for each (send_delta, arrival_delta, arrival)"},
    {NULL},
};

static PyMemberDef trend_members[] = {
    {"threshold", T_DOUBLE, offsetof(TrendObject, threshold), READONLY, NULL},
    {"trend", T_DOUBLE, offsetof(TrendObject, trend), READONLY, NULL},
    {"modified_trend", T_DOUBLE, offsetof(TrendObject, modified_trend), READONLY, NULL},
    {NULL},
};

static PyGetSetDef trend_getset[] = {
    {"state", (getter)trend_get_state, NULL, "normal, overusing or underusing", NULL},
    {NULL},
};

static PyTypeObject TrendType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu._native.Trendline",
    .tp_basicsize = sizeof(TrendObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The delay trend and overuse detector (sfu/gcc/trendline.py) in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)trend_init,
    .tp_dealloc = (destructor)trend_dealloc,
    .tp_methods = trend_methods,
    .tp_members = trend_members,
    .tp_getset = trend_getset,
};

int feedback_add_types(PyObject *m)
{
    if ((s_state_names[NORMAL] = PyUnicode_InternFromString("normal")) == NULL ||
        (s_state_names[OVERUSING] = PyUnicode_InternFromString("overusing")) == NULL ||
        (s_state_names[UNDERUSING] = PyUnicode_InternFromString("underusing")) == NULL)
        return -1;
    if (PyType_Ready(&TrendType) < 0 ||
        PyModule_AddObjectRef(m, "Trendline", (PyObject *)&TrendType) < 0)
        return -1;
    if ((s_seq = PyUnicode_InternFromString("seq")) == NULL ||
        (s_send_time = PyUnicode_InternFromString("send_time")) == NULL ||
        (s_size = PyUnicode_InternFromString("size")) == NULL ||
        (s_arrival = PyUnicode_InternFromString("arrival")) == NULL)
        return -1;
    if (PyType_Ready(&PathType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "FeedbackPath", (PyObject *)&PathType);
}
