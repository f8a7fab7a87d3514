"""Drivers that own sockets. prefork.workers.aio: the asyncio worker (ASGI, WebSockets).
(The epoll worker still lives in prefork.workers.epoll and prefork.workers.connection.)"""
