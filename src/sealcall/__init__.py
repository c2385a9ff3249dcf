"""sealcall: end-to-end encrypted voice and video calls for secure messengers.

The layers, bottom up: :mod:`sealcall.sframe` (RFC 9605 frame encryption) and :mod:`sealcall.e2ee`
(codec-aware frame protection and call key agreement). Higher layers (media, signaling, calls,
transport) build on these.
"""

__version__ = "0.1.0"
