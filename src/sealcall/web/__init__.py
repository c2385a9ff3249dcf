"""The web client: the package that will serve the calling page on 127.0.0.1 (issue 10).

For now it ships ``static/sframe.js``, SFrame (RFC 9605) in plain JavaScript with WebCrypto, the
same wire format as :mod:`sealcall.sframe`, checked by ``node --test tests/js/`` against the same
RFC 9605 vectors; and ``static/frames.js``, the codec-aware frame protection of
:mod:`sealcall.e2ee.codecs` (same bytes, checked against frames the Python side protected).
"""
