"""The SFU: a raw-RTP forwarder for end-to-end encrypted media it cannot read (being built).

Sans-I/O packet layer: RTP headers and extensions (``rtp``), the VP8 payload descriptor and clear
key-frame prefix (``vp8``), compound RTCP (``rtcp``), per-subscriber seq/timestamp/SSRC rewriting
across layer switches (``rewriter``) and the NACK/RTX packet cache (``packet_cache``). Who may join:
OpenID token and current call membership (``admission``, ``admission_service``) and short-lived
join tokens (``join_token``).
"""
