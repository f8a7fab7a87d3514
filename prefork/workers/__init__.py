"""Drivers that own sockets. prefork.workers.aio: the asyncio worker (ASGI, WebSockets).
(The epoll worker still lives in prefork.worker and prefork.connection.)"""
