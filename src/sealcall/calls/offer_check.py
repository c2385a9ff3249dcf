"""Which media of a remote offer could not be encrypted, read from its SDP before anything rings.

Frames are protected per codec (:class:`~sealcall.e2ee.Codec`), and the media layer never
negotiates any other codec. An offer whose audio or video section lists none of them can only be
answered in the clear, so the call engine refuses it as ``encryption_required`` on arrival instead
of failing later inside the media layer.
"""

from sealcall.e2ee import Codec

# The codecs each kind of media section may carry (RTP names, lower case).
PROTECTABLE = {"audio": {Codec.OPUS.value}, "video": {Codec.VP8.value, Codec.H264.value}}


def unprotectable_media(sdp: str) -> list[str]:
    """The kinds (``audio``, ``video``) of the offer's active media sections that list no codec
    whose frames can be encrypted, in order; empty when every section can be encrypted."""
    out: list[str] = []
    sections: list[tuple[str, list[str], dict[str, str]]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            active = len(fields) >= 4 and fields[0] in PROTECTABLE and fields[1] != "0"
            # An inactive (port 0) or non-media section gets a kind that is never checked.
            sections.append((fields[0] if active else "", fields[3:], {}))
        elif line.startswith("a=rtpmap:") and sections:
            payload_type, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            sections[-1][2][payload_type] = encoding.split("/")[0].lower()
    for kind, payload_types, names in sections:
        if kind and not any(names.get(pt) in PROTECTABLE[kind] for pt in payload_types):
            out.append(kind)
    return out
