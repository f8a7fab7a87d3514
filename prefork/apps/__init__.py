"""Application adapters. prefork.apps.asgi: ASGI 3 detection, scopes and lifespan.
(App, WSGI and static files still live in prefork.app, prefork.wsgi, prefork.static.)"""
