# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython twin of App.__call__ (prefork/apps/app.py, `App.dispatch`): its common case in C.

The common case is a path without parameters that has a handler for the method, in an
App not mounted under a root path: two dict lookups, the Request wrapper, the handler's
call, and its answer as it is when it is already a Response. That is what this does; every
other request (a root path, a pattern, a static mount, 404, 405, HEAD on a GET route) goes
to the pure twin, `App.dispatch`, itself, so routing rules cannot drift. The same is true
of what a handler returns when it is not a Response (to_response) and of what it raises
(App._exception). A difference between the twins is a bug: tests/test_app_twins.py
compares them.

The Request wrapper is made without running its __init__ (type_call and a Python frame
cost more than the rest of the dispatch): its three slots are set here, as
Request.__init__ sets them with no params.
"""

from cpython.object cimport PyObject_SetAttr

cdef extern from *:
    """
    /* object.__new__(type): what Request(...) calls before its __init__. */
    static PyObject *prefork_object_new(PyObject *type, PyObject *args) {
        return PyBaseObject_Type.tp_new((PyTypeObject *)type, args, NULL);
    }
    """
    object prefork_object_new(object type, object args)

from prefork.apps import app as _pure
from prefork.apps.request import Request, _EMPTY

cdef object _Request = Request
cdef object _Response = _pure.Response
cdef object _to_response = _pure.to_response
cdef object _pure_call = _pure.App.dispatch
cdef object _empty_params = _EMPTY
cdef tuple _NO_ARGS = ()
cdef str S_REQ = "_req"
cdef str S_CONN = "_conn"
cdef str S_PARAMS = "params"

# Request has no __new__ of its own: object's, as Request(...) would call it.
assert Request.__new__ is object.__new__


def call(app, req, conn=None):
    """App.__call__: the common case here, every other through App.dispatch."""
    cdef object methods, fn, request, result
    if not app.root_path:
        methods = (<dict?>app._exact).get(req.path)
        if methods is not None:
            fn = (<dict?>methods).get(req.method)
            if fn is not None:
                request = prefork_object_new(_Request, _NO_ARGS)
                PyObject_SetAttr(request, S_REQ, req)
                PyObject_SetAttr(request, S_CONN, conn)
                PyObject_SetAttr(request, S_PARAMS, _empty_params)
                try:
                    result = fn(request)
                    if type(result) is _Response:
                        return result
                    return _to_response(result)
                except Exception as exc:
                    return app._exception(request, exc)
    return _pure_call(app, req, conn)


_pure._install(call)  # App.__call__ = call, unless PREFORK_APP=python (see app.py)
