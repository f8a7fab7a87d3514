"""Application adapters. prefork.apps.asgi: ASGI 3 detection, scopes and lifespan.
(App, WSGI and static files still live in prefork.apps.app, prefork.apps.wsgi, prefork.apps.static.)"""
