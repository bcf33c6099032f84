/* SPDX-License-Identifier: MIT */
/*
 * python/_heirloom.c: the C half of the Python package (heirloom._heirloom).
 * One type, _heirloom.Client, one method per C call, nothing else: the C
 * header is the contract, and heirloom/__init__.py adds the Python manners
 * (exceptions by code, Event, asyncio). Every call that can wait releases
 * the GIL; calls on one client are serialised by the library's own mutex,
 * so threads may share a Client. Errors come back as
 * _heirloom.raise_error(code), set by __init__.py, so that each code maps
 * to its heirloom.Error subclass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <heirloom/heirloom.h>

#include <errno.h>
#include <stdlib.h>

static PyObject *error_factory; /* heirloom._error_for(code) -> exception */

static PyObject *
fail(int rc)
{
	if (error_factory) {
		PyObject *e = PyObject_CallFunction(error_factory, "i", rc);
		if (e) {
			PyErr_SetObject((PyObject *)Py_TYPE(e), e);
			Py_DECREF(e);
		}
		return NULL;
	}
	PyErr_Format(PyExc_OSError, "%s (%s)", hl_strerror(rc), hl_err_name(rc));
	return NULL;
}

typedef struct {
	PyObject_HEAD struct hl_client *c;
	uint32_t max_value;
} ClientObject;

static int
alive(ClientObject *self)
{
	if (self->c)
		return 1;
	PyErr_SetString(PyExc_ValueError, "I/O operation on a closed heirloom client");
	return 0;
}

static int
client_init(ClientObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "name", "flags", "timeout_ms", "expected_owner", NULL };
	const char *name, *owner = NULL;
	unsigned flags = 0;
	int timeout_ms = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "s|Iiz", names, &name, &flags, &timeout_ms,
	                                 &owner))
		return -1;
	struct hl_open_opts o = { .flags = flags,
		                  .timeout_ms = timeout_ms,
		                  .expected_owner = owner };
	struct hl_client *c = NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_open(name, &o, &c);
	Py_END_ALLOW_THREADS
	if (rc) {
		fail(rc);
		return -1;
	}
	struct hl_caps caps;
	hl_caps(c, &caps);
	if (self->c) {
		Py_BEGIN_ALLOW_THREADS
		hl_close(self->c);
		Py_END_ALLOW_THREADS
	}
	self->c = c;
	self->max_value = caps.max_value;
	return 0;
}

static void
client_dealloc(ClientObject *self)
{
	if (self->c) {
		Py_BEGIN_ALLOW_THREADS
		hl_close(self->c);
		Py_END_ALLOW_THREADS
		self->c = NULL;
	}
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
client_close(ClientObject *self, PyObject *unused)
{
	(void)unused;
	if (self->c) {
		struct hl_client *c = self->c;
		int rc;
		self->c = NULL;
		Py_BEGIN_ALLOW_THREADS
		rc = hl_close(c);
		Py_END_ALLOW_THREADS
		if (rc)
			return fail(rc);
	}
	Py_RETURN_NONE;
}

static PyObject *
client_observe(ClientObject *self, PyObject *args)
{
	Py_buffer key;
	unsigned int flags = 0;       /* HL_OBSERVE_*, checked by hl_observe_with() */
	unsigned int progress_ms = 0; /* hl_observe_opts.progress_ms, checked there */
	if (!PyArg_ParseTuple(args, "y*|II", &key, &flags, &progress_ms))
		return NULL;
	if (!alive(self)) {
		PyBuffer_Release(&key);
		return NULL;
	}
	hl_observer_id id = 0;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	struct hl_observe_opts o = { .flags = flags, .progress_ms = progress_ms };
	rc = hl_observe_with(self->c, key.buf, (size_t)key.len, &o, &id);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&key);
	if (rc)
		return fail(rc);
	return PyLong_FromUnsignedLongLong(id);
}

static PyObject *
client_unobserve(ClientObject *self, PyObject *args)
{
	unsigned long long id;
	if (!PyArg_ParseTuple(args, "K", &id) || !alive(self))
		return NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_unobserve(self->c, id);
	Py_END_ALLOW_THREADS
	if (rc)
		return fail(rc);
	Py_RETURN_NONE;
}

static PyObject *
client_publish(ClientObject *self, PyObject *args)
{
	Py_buffer key, val, meta;
	if (!PyArg_ParseTuple(args, "y*y*y*", &key, &val, &meta))
		return NULL;
	int rc = -EINVAL;
	if (alive(self)) {
		Py_BEGIN_ALLOW_THREADS
		rc = hl_publish(self->c, key.buf, (size_t)key.len, val.buf, (size_t)val.len,
		                meta.buf, (size_t)meta.len);
		Py_END_ALLOW_THREADS
	}
	PyBuffer_Release(&key);
	PyBuffer_Release(&val);
	PyBuffer_Release(&meta);
	if (!self->c)
		return NULL;
	if (rc)
		return fail(rc);
	Py_RETURN_NONE;
}

static PyObject *
client_delete(ClientObject *self, PyObject *args)
{
	Py_buffer key;
	if (!PyArg_ParseTuple(args, "y*", &key))
		return NULL;
	if (!alive(self)) {
		PyBuffer_Release(&key);
		return NULL;
	}
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_delete(self->c, key.buf, (size_t)key.len);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&key);
	if (rc)
		return fail(rc);
	Py_RETURN_NONE;
}

/* publish_if(key, value, meta, if_rev) -> (code, revision): code 0 or
 * HL_ECONFLICT (revision: the new one, or the key's current one); any
 * other failure raises. The round trip waits: the GIL is released. */
static PyObject *
client_publish_if(ClientObject *self, PyObject *args)
{
	Py_buffer key, val, meta;
	unsigned long long if_rev;
	if (!PyArg_ParseTuple(args, "y*y*y*K", &key, &val, &meta, &if_rev))
		return NULL;
	int rc = -EINVAL;
	uint64_t cur = 0;
	if (alive(self)) {
		Py_BEGIN_ALLOW_THREADS
		rc = hl_publish_if(self->c, key.buf, (size_t)key.len, val.buf, (size_t)val.len,
		                   meta.buf, (size_t)meta.len, if_rev, &cur);
		Py_END_ALLOW_THREADS
	}
	PyBuffer_Release(&key);
	PyBuffer_Release(&val);
	PyBuffer_Release(&meta);
	if (!self->c)
		return NULL;
	if (rc && rc != HL_ECONFLICT)
		return fail(rc);
	return Py_BuildValue("(iK)", rc, (unsigned long long)cur);
}

/* delete_if(key, if_rev) -> (code, revision), as publish_if(). */
static PyObject *
client_delete_if(ClientObject *self, PyObject *args)
{
	Py_buffer key;
	unsigned long long if_rev;
	if (!PyArg_ParseTuple(args, "y*K", &key, &if_rev))
		return NULL;
	if (!alive(self)) {
		PyBuffer_Release(&key);
		return NULL;
	}
	int rc;
	uint64_t cur = 0;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_delete_if(self->c, key.buf, (size_t)key.len, if_rev, &cur);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&key);
	if (rc && rc != HL_ECONFLICT)
		return fail(rc);
	return Py_BuildValue("(iK)", rc, (unsigned long long)cur);
}

static PyObject *
client_flush(ClientObject *self, PyObject *args)
{
	int t = -1;
	if (!PyArg_ParseTuple(args, "|i", &t) || !alive(self))
		return NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_flush(self->c, t);
	Py_END_ALLOW_THREADS
	if (rc)
		return fail(rc);
	Py_RETURN_NONE;
}

/* get(key) -> (value, revision) or None. No worker involved (seqlock
 * read): the GIL is kept, it never waits. */
static PyObject *
client_get(ClientObject *self, PyObject *args)
{
	Py_buffer key;
	if (!PyArg_ParseTuple(args, "y*", &key))
		return NULL;
	if (!alive(self)) {
		PyBuffer_Release(&key);
		return NULL;
	}
	size_t cap = self->max_value ? self->max_value : 1, len = 0;
	char *buf = PyMem_Malloc(cap);
	if (!buf) {
		PyBuffer_Release(&key);
		return PyErr_NoMemory();
	}
	uint64_t rev = 0;
	int rc = hl_get(self->c, key.buf, (size_t)key.len, buf, cap, &len, &rev);
	PyBuffer_Release(&key);
	PyObject *r;
	if (rc == -ENOENT) {
		r = Py_NewRef(Py_None);
	} else if (rc) {
		r = fail(rc);
	} else {
		r = Py_BuildValue("(y#K)", buf, (Py_ssize_t)(len < cap ? len : cap),
		                  (unsigned long long)rev);
	}
	PyMem_Free(buf);
	return r;
}

static int
key_cb(const void *key, size_t key_len, uint64_t revision, void *arg)
{
	PyObject *t = Py_BuildValue("(y#K)", (const char *)key, (Py_ssize_t)key_len,
	                            (unsigned long long)revision);
	if (!t || PyList_Append((PyObject *)arg, t)) {
		Py_XDECREF(t);
		return 1;
	}
	Py_DECREF(t);
	return 0;
}

static PyObject *
client_keys(ClientObject *self, PyObject *unused)
{
	(void)unused;
	if (!alive(self))
		return NULL;
	PyObject *l = PyList_New(0);
	if (!l)
		return NULL;
	int rc = hl_keys(self->c, key_cb, l);
	if (PyErr_Occurred()) {
		Py_DECREF(l);
		return NULL;
	}
	if (rc < 0) {
		Py_DECREF(l);
		return fail(rc);
	}
	return l;
}

#define STAT(f) #f, (unsigned long long)st.f
static PyObject *
client_stats(ClientObject *self, PyObject *unused)
{
	(void)unused;
	if (!alive(self))
		return NULL;
	struct hl_stats st;
	int rc = hl_stats(self->c, &st);
	if (rc)
		return fail(rc);
	return Py_BuildValue(
	        "{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsisisKsK}", STAT(publishes),
	        STAT(skipped_unchanged), STAT(deletes), STAT(notifications), STAT(lagged_drops),
	        STAT(resyncs), STAT(observers_added), STAT(observers_removed),
	        STAT(endpoints_attached), STAT(endpoints_removed), STAT(cleanup_runs),
	        STAT(cleanup_removed), STAT(handoffs), STAT(reattaches), STAT(epoch), STAT(keys),
	        STAT(observers), STAT(endpoints), STAT(heap_used), STAT(heap_capacity),
	        STAT(revision), STAT(worker_mem_bytes), "owner_pid", (int)st.owner_pid,
	        "owner_role", st.owner_role, STAT(slow_endpoints), STAT(prefixes));
}

static PyObject *
opt_bytes(const void *p, size_t n, int has)
{
	if (!has)
		return Py_NewRef(Py_None);
	return PyBytes_FromStringAndSize(p ? (const char *)p : "", (Py_ssize_t)n);
}

/* next(timeout_ms) -> (type, observer, key, old, new, revision, publisher,
 * timestamp_ns, meta, lagged), or None when nothing came (-EAGAIN with 0,
 * -ETIMEDOUT otherwise). The GIL is released while it waits; the event's
 * bytes are copied before the next call can reuse them. */
static PyObject *
client_next(ClientObject *self, PyObject *args)
{
	int t = -1;
	if (!PyArg_ParseTuple(args, "|i", &t) || !alive(self))
		return NULL;
	struct hl_event ev;
	int rc;
	if (t == 0) {
		rc = hl_next(self->c, &ev, 0); /* never waits: keep the GIL */
	} else {
		Py_BEGIN_ALLOW_THREADS
		rc = hl_next(self->c, &ev, t);
		Py_END_ALLOW_THREADS
	}
	if (rc == -EAGAIN || rc == -ETIMEDOUT)
		Py_RETURN_NONE;
	if (rc == -EINTR) {
		if (PyErr_CheckSignals())
			return NULL;
		Py_RETURN_NONE;
	}
	if (rc)
		return fail(rc);
	PyObject *key = PyBytes_FromStringAndSize(ev.key, (Py_ssize_t)ev.key_len);
	PyObject *old = opt_bytes(ev.old_value, ev.old_len, ev.has_old);
	PyObject *nw = opt_bytes(ev.new_value, ev.new_len, ev.has_new);
	PyObject *meta = PyBytes_FromStringAndSize(ev.meta ? (const char *)ev.meta : "",
	                                           (Py_ssize_t)ev.meta_len);
	PyObject *r = NULL;
	if (key && old && nw && meta)
		r = Py_BuildValue("(iKOOOKiKOK)", (int)ev.type, (unsigned long long)ev.observer,
		                  key, old, nw, (unsigned long long)ev.revision, (int)ev.publisher,
		                  (unsigned long long)ev.timestamp_ns, meta,
		                  (unsigned long long)ev.lagged);
	Py_XDECREF(key);
	Py_XDECREF(old);
	Py_XDECREF(nw);
	Py_XDECREF(meta);
	return r;
}

static PyObject *
client_fd(ClientObject *self, PyObject *unused)
{
	(void)unused;
	if (!alive(self))
		return NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = hl_fd(self->c);
	Py_END_ALLOW_THREADS
	if (rc < 0)
		return fail(rc);
	return PyLong_FromLong(rc);
}

static PyObject *
client_closed(ClientObject *self, void *unused)
{
	(void)unused;
	return PyBool_FromLong(self->c == NULL);
}

static PyMethodDef client_methods[] = {
	{ "close", (PyCFunction)client_close, METH_NOARGS, "hl_close()" },
	{ "observe", (PyCFunction)client_observe, METH_VARARGS,
	  "hl_observe_with(key, flags=0, progress_ms=0) -> id" },
	{ "unobserve", (PyCFunction)client_unobserve, METH_VARARGS, "hl_unobserve(id)" },
	{ "publish", (PyCFunction)client_publish, METH_VARARGS, "hl_publish(key, value, meta)" },
	{ "delete", (PyCFunction)client_delete, METH_VARARGS, "hl_delete(key)" },
	{ "publish_if", (PyCFunction)client_publish_if, METH_VARARGS,
	  "hl_publish_if(key, value, meta, if_rev) -> (code, rev)" },
	{ "delete_if", (PyCFunction)client_delete_if, METH_VARARGS,
	  "hl_delete_if(key, if_rev) -> (code, rev)" },
	{ "flush", (PyCFunction)client_flush, METH_VARARGS, "hl_flush(timeout_ms)" },
	{ "get", (PyCFunction)client_get, METH_VARARGS, "hl_get(key) -> (value, rev) | None" },
	{ "keys", (PyCFunction)client_keys, METH_NOARGS, "hl_keys() -> [(key, rev)]" },
	{ "stats", (PyCFunction)client_stats, METH_NOARGS, "hl_stats() -> dict" },
	{ "next", (PyCFunction)client_next, METH_VARARGS, "hl_next(timeout_ms) -> tuple | None" },
	{ "fd", (PyCFunction)client_fd, METH_NOARGS, "hl_fd() -> int" },
	{ NULL, NULL, 0, NULL },
};

static PyGetSetDef client_getset[] = {
	{ "closed", (getter)client_closed, NULL, "whether close() was called", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject ClientType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "heirloom._heirloom.Client",
	.tp_basicsize = sizeof(ClientObject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "One libheirloom client (struct hl_client); see heirloom.Client.",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)client_init,
	.tp_dealloc = (destructor)client_dealloc,
	.tp_methods = client_methods,
	.tp_getset = client_getset,
};

static PyObject *
mod_set_error_factory(PyObject *m, PyObject *f)
{
	(void)m;
	Py_XSETREF(error_factory, Py_NewRef(f));
	Py_RETURN_NONE;
}

static PyObject *
mod_err_name(PyObject *m, PyObject *args)
{
	(void)m;
	int code;
	if (!PyArg_ParseTuple(args, "i", &code))
		return NULL;
	return PyUnicode_FromString(hl_err_name(code));
}

static PyObject *
mod_strerror(PyObject *m, PyObject *args)
{
	(void)m;
	int code;
	if (!PyArg_ParseTuple(args, "i", &code))
		return NULL;
	return PyUnicode_FromString(hl_strerror(code));
}

static PyMethodDef mod_methods[] = {
	{ "set_error_factory", mod_set_error_factory, METH_O, "code -> exception instance" },
	{ "err_name", mod_err_name, METH_VARARGS, "hl_err_name(code)" },
	{ "strerror", mod_strerror, METH_VARARGS, "hl_strerror(code)" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef moddef = {
	PyModuleDef_HEAD_INIT,
	.m_name = "heirloom._heirloom",
	.m_doc = "libheirloom, one method per C call (use the heirloom package).",
	.m_size = -1,
	.m_methods = mod_methods,
};

PyMODINIT_FUNC
PyInit__heirloom(void)
{
	if (PyType_Ready(&ClientType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&moddef);
	if (!m)
		return NULL;
	if (PyModule_AddObjectRef(m, "Client", (PyObject *)&ClientType) < 0 ||
	    PyModule_AddIntConstant(m, "OPEN_SYNC", HL_OPEN_SYNC) < 0 ||
	    PyModule_AddIntConstant(m, "OPEN_NOWAIT", HL_OPEN_NOWAIT) < 0 ||
	    PyModule_AddIntConstant(m, "OBSERVE_PREFIX", HL_OBSERVE_PREFIX) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
