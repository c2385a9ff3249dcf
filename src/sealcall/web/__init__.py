"""The web client: ``sealcall app``, the calling app in a local browser page.

This process keeps everything Matrix and runs the call engine (:mod:`sealcall.web.app`,
:mod:`sealcall.web.group_app`); the page (``static/``) does WebRTC and encrypts every frame in a
worker (``static/e2ee_worker.js``: SFrame in JavaScript with WebCrypto, the same wire format as
:mod:`sealcall.sframe`). They talk over one WebSocket on 127.0.0.1 (:mod:`sealcall.web.server`,
:mod:`sealcall.web.protocol`), locked to the page by a per-launch secret and its Origin; the
protocols are in docs/web-protocol.md.
"""
