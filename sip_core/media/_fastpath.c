/* The media engine's optional compiled packet path (see sip_core/media/fastpath.py).
 *
 * What it does is what MediaLeg._rtp_from_peer does in Python for its common case, and nothing
 * more: a leg whose socket is connected to its latched far end, whose other leg is connected too
 * and sends the packets unchanged (no renumbering, no generated audio, not held). For such a leg
 * the relay registers (fd, peer fd, telephone-event payload type) here; `dispatch` then reads
 * one datagram from each ready registered socket, checks it as Python would (version 2, at least
 * a header, not an RTCP payload type), and sends it from the peer socket. It counts what Python
 * counts and keeps the header of the last packet sent with the time of its batch, which the
 * relay takes back (`take`) before anything in Python reads them. A telephone-event packet goes
 * back to Python whole, since DTMF detection, swallowing and renumbering live there; so do the
 * ready descriptors that are not registered here (RTCP, unlatched legs, the control channel).
 *
 * Why compiled: per forwarded packet the Python handler costs about as much in the interpreter
 * as the two system calls cost in the kernel; this path leaves only the system calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#define BUFFER_SIZE 2048
#define HEADER_SIZE 12
#define MAX_EVENTS 1024

typedef struct {
    int active;
    int peer_fd;
    int dtmf_payload_type; /* -1: none */
    unsigned long long received;
    unsigned long long forwarded;
    unsigned long long dropped_invalid;
    unsigned long long dropped_no_peer;
    int out_valid; /* a packet went out of the peer socket since the last take */
    unsigned char out_header[HEADER_SIZE];
    double out_time;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *entries; /* indexed by file descriptor */
    int capacity;
    int ready;
    struct epoll_event events[MAX_EVENTS];
    unsigned char buffer[BUFFER_SIZE];
} FastPath;

static int
grow(FastPath *self, int fd)
{
    if (fd < self->capacity) {
        return 0;
    }
    int capacity = self->capacity ? self->capacity : 256;
    while (capacity <= fd) {
        capacity *= 2;
    }
    Entry *entries = PyMem_Realloc(self->entries, sizeof(Entry) * (size_t)capacity);
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(entries + self->capacity, 0, sizeof(Entry) * (size_t)(capacity - self->capacity));
    self->entries = entries;
    self->capacity = capacity;
    return 0;
}

static Entry *
entry_for(FastPath *self, int fd)
{
    if (fd < 0 || fd >= self->capacity || !self->entries[fd].active) {
        return NULL;
    }
    return &self->entries[fd];
}

static PyObject *
FastPath_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    FastPath *self = (FastPath *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->entries = NULL;
        self->capacity = 0;
        self->ready = 0;
    }
    return (PyObject *)self;
}

static void
FastPath_dealloc(FastPath *self)
{
    PyMem_Free(self->entries);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* set(fd, peer_fd, dtmf_payload_type): forward what arrives on fd out of peer_fd. Counts and the
 * last header stay if fd was registered already (the relay takes them before it changes peers). */
static PyObject *
FastPath_set(FastPath *self, PyObject *args)
{
    int fd, peer_fd, dtmf_payload_type;
    if (!PyArg_ParseTuple(args, "iii:set", &fd, &peer_fd, &dtmf_payload_type)) {
        return NULL;
    }
    if (fd < 0 || peer_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "file descriptors must not be negative");
        return NULL;
    }
    if (grow(self, fd) < 0) {
        return NULL;
    }
    Entry *entry = &self->entries[fd];
    if (!entry->active) {
        memset(entry, 0, sizeof(Entry));
        entry->active = 1;
    }
    entry->peer_fd = peer_fd;
    entry->dtmf_payload_type = dtmf_payload_type;
    Py_RETURN_NONE;
}

/* The counts since the last take, and the last header sent (None: none since) with its time. */
static PyObject *
taken(Entry *entry)
{
    PyObject *header;
    if (entry->out_valid) {
        header = PyBytes_FromStringAndSize((const char *)entry->out_header, HEADER_SIZE);
        if (header == NULL) {
            return NULL;
        }
    } else {
        header = Py_NewRef(Py_None);
    }
    PyObject *result = Py_BuildValue(
        "(KKKKNd)",
        entry->received,
        entry->forwarded,
        entry->dropped_invalid,
        entry->dropped_no_peer,
        header,
        entry->out_time);
    if (result == NULL) {
        return NULL;
    }
    entry->received = entry->forwarded = entry->dropped_invalid = entry->dropped_no_peer = 0;
    entry->out_valid = 0;
    return result;
}

/* What take and remove share: the counts of the descriptor `arg`, taken; with `leave`, the
 * descriptor is no longer forwarded here. None when it is not registered. */
static PyObject *
take_from(FastPath *self, PyObject *arg, int leave)
{
    int fd = PyLong_AsInt(arg);
    if (fd == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Entry *entry = entry_for(self, fd);
    if (entry == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *result = taken(entry);
    if (result != NULL && leave) {
        entry->active = 0;
    }
    return result;
}

static PyObject *
FastPath_take(FastPath *self, PyObject *arg)
{
    return take_from(self, arg, 0);
}

static PyObject *
FastPath_remove(FastPath *self, PyObject *arg)
{
    return take_from(self, arg, 1);
}

/* Seconds as epoll_wait's timeout: whole milliseconds rounded up, as select.epoll.poll does;
 * negative: forever. */
static int
milliseconds(double seconds)
{
    if (seconds < 0) {
        return -1;
    }
    double rounded = seconds * 1000.0;
    int ms = (int)rounded;
    return (double)ms < rounded ? ms + 1 : ms;
}

/* epoll_wait without the GIL: how many descriptors are ready. An interrupted wait runs the
 * signal handlers and reports nothing ready; -1 with an exception set on an error. */
static int
wait_ready(FastPath *self, int epfd, int ms)
{
    int count;
    Py_BEGIN_ALLOW_THREADS
    count = epoll_wait(epfd, self->events, MAX_EVENTS, ms);
    Py_END_ALLOW_THREADS
    if (count >= 0) {
        return count;
    }
    if (errno != EINTR) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return PyErr_CheckSignals() < 0 ? -1 : 0;
}

/* poll(epfd, timeout): the number of ready descriptors (see `milliseconds`, `wait_ready`). */
static PyObject *
FastPath_poll(FastPath *self, PyObject *args)
{
    int epfd;
    double timeout;
    if (!PyArg_ParseTuple(args, "id:poll", &epfd, &timeout)) {
        return NULL;
    }
    int count = wait_ready(self, epfd, milliseconds(timeout));
    if (count < 0) {
        self->ready = 0;
        return NULL;
    }
    self->ready = count;
    return PyLong_FromLong(count);
}

/* Forward what the first `count` events found on registered sockets; append the other ready
 * descriptors to `rest` as (fd, events) and the telephone-event packets to `packets` as
 * (fd, bytes). -1 with an exception set when a list could not grow. */
static int
handle(FastPath *self, int count, double now, PyObject *rest, PyObject *packets)
{
    for (int i = 0; i < count; i++) {
        int fd = self->events[i].data.fd;
        Entry *entry = entry_for(self, fd);
        if (entry == NULL) {
            PyObject *item = Py_BuildValue("(iI)", fd, (unsigned int)self->events[i].events);
            if (item == NULL || PyList_Append(rest, item) < 0) {
                Py_XDECREF(item);
                return -1;
            }
            Py_DECREF(item);
            continue;
        }
        ssize_t size = recv(fd, self->buffer, BUFFER_SIZE, MSG_DONTWAIT);
        if (size < 0) {
            continue; /* nothing waiting, or the far end's ICMP port unreachable */
        }
        entry->received++;
        unsigned char *packet = self->buffer;
        int payload_type = size >= 2 ? packet[1] & 0x7F : 0;
        if (size < HEADER_SIZE || (packet[0] & 0xC0) != 0x80
            || (payload_type >= 72 && payload_type <= 95)) {
            entry->dropped_invalid++;
            continue;
        }
        if (payload_type == entry->dtmf_payload_type) {
            PyObject *item = Py_BuildValue("(iy#)", fd, (const char *)packet, (Py_ssize_t)size);
            if (item == NULL || PyList_Append(packets, item) < 0) {
                Py_XDECREF(item);
                return -1;
            }
            Py_DECREF(item);
            continue;
        }
        if (send(entry->peer_fd, packet, (size_t)size, MSG_DONTWAIT) < 0) {
            entry->dropped_no_peer++; /* a full buffer or an unreachable far end: RTP is lossy */
            continue;
        }
        memcpy(entry->out_header, packet, HEADER_SIZE);
        entry->out_valid = 1;
        entry->out_time = now;
        entry->forwarded++;
    }
    return 0;
}

static PyObject *
results(PyObject *rest, PyObject *packets)
{
    return Py_BuildValue("(NN)", rest, packets);
}

/* dispatch(now): handle what the last poll found (see `handle`); (rest, packets). */
static PyObject *
FastPath_dispatch(FastPath *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *rest = PyList_New(0);
    PyObject *packets = PyList_New(0);
    int ready = self->ready;
    self->ready = 0;
    if (rest == NULL || packets == NULL || handle(self, ready, now, rest, packets) < 0) {
        Py_XDECREF(rest);
        Py_XDECREF(packets);
        return NULL;
    }
    return results(rest, packets);
}

static double
monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* run(epfd, timeout): wait and forward, round after round, for as long as only registered
 * sockets become ready; return (rest, packets) as `dispatch` does once anything else is ready
 * (the control channel, a timer, RTCP, a telephone-event packet) or the timeout (seconds, as
 * `poll`) has passed. Each round's time is CLOCK_MONOTONIC's, which is time.monotonic(): only for
 * a relay on that clock (the engine process's). The caller holds the relay's lock throughout:
 * only for a process where nothing else takes it. */
static PyObject *
FastPath_run(FastPath *self, PyObject *args)
{
    int epfd;
    double timeout;
    if (!PyArg_ParseTuple(args, "id:run", &epfd, &timeout)) {
        return NULL;
    }
    PyObject *rest = PyList_New(0);
    PyObject *packets = PyList_New(0);
    if (rest == NULL || packets == NULL) {
        goto error;
    }
    double deadline = monotonic_now() + (timeout < 0 ? 0 : timeout);
    for (;;) {
        double remaining = deadline - monotonic_now();
        int ms = timeout < 0 ? -1 : milliseconds(remaining > 0 ? remaining : 0);
        int count = wait_ready(self, epfd, ms);
        if (count < 0) {
            goto error;
        }
        if (handle(self, count, monotonic_now(), rest, packets) < 0) {
            goto error;
        }
        if (count == 0 || PyList_GET_SIZE(rest) > 0 || PyList_GET_SIZE(packets) > 0) {
            return results(rest, packets);
        }
        if (timeout >= 0 && monotonic_now() >= deadline) {
            return results(rest, packets);
        }
    }

error:
    Py_XDECREF(rest);
    Py_XDECREF(packets);
    return NULL;
}

static PyMethodDef FastPath_methods[] = {
    {"set", (PyCFunction)FastPath_set, METH_VARARGS,
     "set(fd, peer_fd, dtmf_payload_type): forward what arrives on fd out of peer_fd."},
    {"take", (PyCFunction)FastPath_take, METH_O,
     "take(fd): the counts and the last header sent since the last take (None: not set)."},
    {"remove", (PyCFunction)FastPath_remove, METH_O,
     "remove(fd): stop forwarding fd here; what take would return."},
    {"poll", (PyCFunction)FastPath_poll, METH_VARARGS,
     "poll(epfd, timeout): wait for ready descriptors; how many."},
    {"dispatch", (PyCFunction)FastPath_dispatch, METH_O,
     "dispatch(now): forward what the last poll found; (other ready, telephone-event packets)."},
    {"run", (PyCFunction)FastPath_run, METH_VARARGS,
     "run(epfd, timeout): poll and dispatch until anything but registered sockets is ready."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sip_core.media._fastpath.FastPath",
    .tp_doc = "The compiled forwarding of plain RTP between connected legs.",
    .tp_basicsize = sizeof(FastPath),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FastPath_new,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_methods = FastPath_methods,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sip_core.media._fastpath",
    .m_doc = "The media engine's optional compiled packet path.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&FastPathType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
