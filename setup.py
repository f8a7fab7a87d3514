"""Builds the optional Cython extensions prefork.http._parser, prefork.apps._wsgi,
prefork.apps._app (App.__call__'s common case), prefork.workers._conn (the connection's
hot path) and prefork._accesslog (the access log's
combined line).

Without a compiler (or without Cython) the install still succeeds and the pure-Python
parser runs, with a warning at startup. PREFORK_REQUIRE_EXTENSION=1 turns a failed build
into a failed install; CI sets it so that a broken extension can never pass unnoticed.
"""
import os

from setuptools import setup
from setuptools.extension import Extension

REQUIRED = os.environ.get("PREFORK_REQUIRE_EXTENSION", "") not in ("", "0")


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        print("prefork-http: Cython is not available; the pure-Python twins (parser, WSGI adapter, App dispatch, connection core, access log) will be used")
        return []
    exts = cythonize(
        [Extension("prefork.http._parser", ["prefork/http/_parser.pyx"], extra_compile_args=["-O2"]),
         Extension("prefork.apps._wsgi", ["prefork/apps/_wsgi.pyx"], extra_compile_args=["-O2"]),
         Extension("prefork.apps._app", ["prefork/apps/_app.pyx"], extra_compile_args=["-O2"]),
         Extension("prefork.workers._conn", ["prefork/workers/_conn.pyx"], extra_compile_args=["-O2"]),
         Extension("prefork._accesslog", ["prefork/_accesslog.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    )
    # cythonize() builds new Extension objects and drops optional=, so set it here.
    for ext in exts:
        ext.optional = not REQUIRED
    return exts


setup(ext_modules=extensions())
