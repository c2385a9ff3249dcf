"""The SFU's end of one participant's WebRTC connection: ICE, DTLS-SRTP, raw packets both ways.

aioice does ICE (host candidates on the given addresses only, never a STUN server), aiortc's
``RTCDtlsTransport`` does the DTLS handshake and SRTP key setup, and the packets stay raw: a
decrypted RTP or RTCP packet goes as bytes to ``on_rtp`` / ``on_rtcp``, never through aiortc's
``RTCRtpReceiver`` (no jitter buffer, depacketizer or decoder: that pipeline tops out near 9,000
packets/s here), and ``send_rtp`` / ``send_rtcp`` protect and send bytes synchronously.

The hooks, and why they are safe with the pinned aiortc (>=1.16,<1.17) and aioice 0.13:

- ``_RawDtlsTransport`` overrides ``_handle_rtp_data`` and ``_handle_rtcp_data``: in aiortc 1.16,
  ``RTCDtlsTransport._recv_next`` calls exactly these two coroutines with the SRTP/SRTCP-unprotected
  bytes and nothing else; the base versions only parse and route to registered receivers, of which
  the SFU registers none. The DTLS pump, handshake, SRTP setup and data-channel path are unchanged.
- SRTP failures (garbage, replays, wrong keys) are caught and logged by aiortc at debug level only;
  to count them, ``_setup_srtp`` wraps the receive session in ``_CountingSession``.
- Datagrams that are neither DTLS nor SRTP are ignored by aiortc without a trace; the ICE
  transport's ``_recv`` (an instance attribute aiortc binds to ``Connection.recv``) is replaced by a
  filter that counts and drops them before aiortc sees them.
- Receiving, once the SRTP keys exist, skips aiortc's pump: ``_HostOnlyConnection.data_received``
  (what aioice's socket protocol calls for every non-STUN datagram) unprotects SRTP/SRTCP and calls
  back at once, instead of queueing for the DTLS task; DTLS (the data channel later) still goes
  through aiortc. The overrides above then only see packets queued before the keys were ready.
- The data channel (``control``) is aiortc's ``RTCSctpTransport`` over the same DTLS transport:
  DTLS records still go through aiortc's pump to the SCTP association, and a channel the
  participant opens (DCEP) goes to ``on_datachannel``.
- The SRTP/SRTCP test runs before aioice's: each host candidate's ``StunProtocol`` gets an
  instance ``datagram_received`` that hands an SRTP datagram (first byte 128..191; STUN's is 0..3)
  to the fast path without aioice first trying, and failing, to parse it as STUN.
- Sending reads the ICE connection's nominated pair (``Connection._nominated[1]``, what aioice's own
  ``sendto`` reads) and writes to its datagram transport's socket directly (through the transport,
  which queues, when the socket would block or something is queued), so a forwarded packet costs
  no coroutine or task.
- Protecting and unprotecting call libsrtp through pylibsrtp's binding on the session's own
  buffer (``Session._srtp``, ``_cdata``, ``_buffer``: what ``Session.protect`` uses), without
  its per-call allocation, and take a ``bytearray`` as it is.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import pylibsrtp
from aioice import Candidate, Connection
from aioice.ice import CandidatePair
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import (
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
)
from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport
from aiortc.sdp import candidate_from_sdp
from pylibsrtp._binding import ffi as _srtp_ffi  # type: ignore[import-not-found]
from pylibsrtp._binding import lib as _srtp_lib

from sealcall.sfu.negotiation import (
    SCTP_PORT,
    LocalTransport,
    MediaSection,
    MLine,
    NegotiationError,
    SctpSection,
    answered_rtx,
    build_answer,
    build_offer,
    check_answer,
    free_payload_type,
    new_send_section,
    rejected_mline,
)

__all__ = ["ParticipantTransport", "TransportClosedError"]

log = logging.getLogger(__name__)

PacketCallback = Callable[[bytes], None]
ChannelCallback = Callable[[RTCDataChannel], None]
SFU_MID_PREFIX = "f"  # mids of the m-lines the SFU adds for forwarded streams
_MAX_SRTP = 1500  # pylibsrtp's session buffer
_MAX_PROTECTED_RTP = _MAX_SRTP - pylibsrtp.SRTP_MAX_TRAILER_LEN
_srtp_protect = _srtp_lib.srtp_protect
_srtp_unprotect = _srtp_lib.srtp_unprotect


class _Srtp:
    """One pylibsrtp session driven directly: the same libsrtp calls, no allocation per packet."""

    __slots__ = ("_buffer", "_cdata", "_length", "_session", "_srtp")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # owns the libsrtp context (freed with it)
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._length = _srtp_ffi.new("int *")

    def _run(self, func: Any, data: bytes | bytearray, trailer: int) -> bytes:
        n = len(data)
        if n > _MAX_SRTP - trailer:
            raise pylibsrtp.Error("packet is too long")
        buffer = self._buffer
        buffer[0:n] = data
        length = self._length
        length[0] = n
        if func(self._srtp, self._cdata, length):
            raise pylibsrtp.Error("libsrtp refused the packet")
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect(self, data: bytes | bytearray) -> bytes:
        """SRTP-protect an RTP packet (``_run`` inlined: this runs once per forwarded packet)."""
        n = len(data)
        if n > _MAX_PROTECTED_RTP:
            raise pylibsrtp.Error("packet is too long")
        buffer = self._buffer
        buffer[0:n] = data
        length = self._length
        length[0] = n
        if _srtp_protect(self._srtp, self._cdata, length):
            raise pylibsrtp.Error("libsrtp refused the packet")
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect_rtcp(self, data: bytes | bytearray) -> bytes:
        """SRTCP-protect an RTCP packet."""
        return self._run(_srtp_lib.srtp_protect_rtcp, data, pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN)

    def unprotect(self, data: bytes) -> bytes:
        """Verify and decrypt an SRTP packet."""
        return self._run(_srtp_unprotect, data, 0)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        """Verify and decrypt an SRTCP packet."""
        return self._run(_srtp_lib.srtp_unprotect_rtcp, data, 0)


class TransportClosedError(ConnectionError):
    """Sending on a participant transport that is not (or no longer) connected: local misuse."""


def _socket_of(transport: asyncio.DatagramTransport) -> Any:
    """The datagram transport's socket (asyncio's selector transport keeps it as ``_sock``)."""
    return getattr(transport, "_sock", None)


class _CountingSession:
    """Wraps the receive ``pylibsrtp.Session`` to count packets that fail to unprotect."""

    __slots__ = ("_owner", "_session")

    def __init__(self, session: pylibsrtp.Session, owner: ParticipantTransport) -> None:
        self._session = session
        self._owner = owner

    def unprotect(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect(data)
        except pylibsrtp.Error:
            self._owner._drop("srtp")
            raise

    def unprotect_rtcp(self, data: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(data)
        except pylibsrtp.Error:
            self._owner._drop("srtcp")
            raise


class _RawDtlsTransport(RTCDtlsTransport):
    """aiortc's DTLS transport, but decrypted RTP/RTCP goes as bytes to the SFU's callbacks."""

    def __init__(
        self, ice: RTCIceTransport, certificate: RTCCertificate, owner: ParticipantTransport
    ) -> None:
        super().__init__(ice, [certificate])
        self._owner = owner

    def _setup_srtp(self) -> None:
        super()._setup_srtp()
        if self._rx_srtp is not None:
            self._owner._rx = _Srtp(self._rx_srtp)
            self._rx_srtp = _CountingSession(self._rx_srtp, self._owner)  # type: ignore[assignment]
        if self._tx_srtp is not None:
            self._owner._tx = _Srtp(self._tx_srtp)

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        owner = self._owner
        owner.rtp_received += 1
        owner._on_rtp(data)

    async def _handle_rtcp_data(self, data: bytes) -> None:
        owner = self._owner
        owner.rtcp_received += 1
        owner._on_rtcp(data)


class _HostOnlyConnection(Connection):
    """An aioice connection whose host candidates are on the given addresses only, no STUN/TURN.

    Once SRTP keys exist, ``fast_path`` takes SRTP/SRTCP datagrams straight from the socket
    callback: no queue, no task switch per packet. DTLS and anything else still goes the usual way.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        super().__init__(ice_controlling=False)
        self._sfu_addresses = list(addresses)
        self.fast_path: Callable[[bytes], None] | None = None

    def data_received(self, data: bytes, component: int) -> None:
        fast = self.fast_path
        if fast is not None and data and 127 < data[0] < 192:
            fast(data)
        else:
            super().data_received(data, component)

    async def gather_candidates(self) -> None:
        if not self._local_candidates_start:
            self._local_candidates_start = True
            self._local_candidates += await self.get_component_candidates(
                component=1, addresses=self._sfu_addresses
            )
            for protocol in self._protocols:
                self._skip_stun_parse(protocol)
            self._local_candidates_end = True

    def _skip_stun_parse(self, protocol: Any) -> None:
        """SRTP reaches the fast path before aioice tries (and fails) to parse it as STUN."""
        slow = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            fast = self.fast_path
            if fast is not None and data and 127 < data[0] < 192:
                fast(data)
            else:
                slow(data, addr)

        protocol.datagram_received = datagram_received


class ParticipantTransport:
    """One participant's WebRTC connection, seen from the SFU: SDP, ICE, DTLS-SRTP, raw packets.

    Call ``answer(offer)`` with the participant's offer, send back the returned answer; packets
    arrive on ``on_rtp``/``on_rtcp`` once connected (``wait_connected``), data channels the
    participant opens on ``on_datachannel``. ``add_send_section``/``remove_send_section`` plus
    ``create_offer``/``set_answer`` renegotiate to add or remove forwarded streams. Callbacks run on
    the event loop and must not block.
    """

    def __init__(
        self,
        on_rtp: PacketCallback,
        on_rtcp: PacketCallback,
        addresses: Sequence[str] = ("127.0.0.1",),
        on_close: Callable[[], None] | None = None,
        on_datachannel: ChannelCallback | None = None,
    ) -> None:
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_close = on_close
        self._on_datachannel = on_datachannel
        self._sctp: RTCSctpTransport | None = None
        self._sctp_section: SctpSection | None = None
        self._connection = _HostOnlyConnection(addresses)
        gatherer = RTCIceGatherer(iceServers=[])
        gatherer._connection = self._connection
        self._ice = RTCIceTransport(gatherer)
        self._ice._recv = self._filtered_recv
        self._dtls = _RawDtlsTransport(self._ice, RTCCertificate.generateCertificate(), self)
        self._dtls.on("statechange", self._dtls_state_changed)
        self._cname = secrets.token_hex(8)
        self._ssrcs: set[int] = set()
        self._mlines: list[MLine] = []
        self._planned: list[MLine] | None = None
        """The m-lines of the next offer (``_mlines`` with streams added or removed), if any."""
        self._next_mid = 0
        self._version = 1
        self._connect_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._rx: _Srtp | None = None
        self._tx: _Srtp | None = None
        self._pair: CandidatePair | None = None
        self._protocol: Any = None
        self._socket: Any = None
        self._address: tuple[str, int] = ("", 0)
        self.rtp_received = 0
        self.rtcp_received = 0
        self.dropped = 0
        """Datagrams dropped: neither DTLS nor SRTP, SRTP before keys, or failing to unprotect."""
        self.sent = 0

    # -- negotiation -------------------------------------------------------------------------------

    @property
    def sections(self) -> list[MediaSection]:
        """The accepted m-lines, in SDP order (after the last completed negotiation)."""
        return [m for m in self._mlines if isinstance(m, MediaSection)]

    async def _local(self) -> LocalTransport:
        await self._ice.iceGatherer.gather()
        params = self._ice.iceGatherer.getLocalParameters()
        return LocalTransport(
            ice=params,
            candidates=tuple(self._ice.iceGatherer.getLocalCandidates()),
            dtls=self._dtls.getLocalParameters(),
            cname=self._cname,
        )

    async def answer(self, offer: str) -> str:
        """Answer the participant's first offer and start connecting; raise ``NegotiationError``."""
        if self._mlines:
            raise NegotiationError("the participant's offer was already answered")
        local = await self._local()
        answered = build_answer(offer, local, self._ssrcs)
        self._mlines = answered.mlines
        self._next_mid = len(answered.mlines)
        parsed = answered.offer
        if answered.sctp is not None:
            self._sctp_section = answered.sctp
            self._sctp = RTCSctpTransport(self._dtls, port=SCTP_PORT)
            self._sctp.on("datachannel", self._datachannel)
        first = parsed.media[0]
        assert first.ice is not None
        assert first.dtls is not None
        self._dtls._set_role("server" if first.dtls.role == "client" else "client")
        for candidate in first.ice_candidates:
            await self._ice.addRemoteCandidate(candidate)
        if first.ice_candidates_complete:  # otherwise more come by add_remote_candidate
            await self._ice.addRemoteCandidate(None)
        remote_ice = RTCIceParameters(
            usernameFragment=first.ice.usernameFragment,
            password=first.ice.password,
            iceLite=first.ice.iceLite,
        )
        self._connect_task = asyncio.ensure_future(self._connect(remote_ice, first.dtls))
        return answered.text

    async def add_remote_candidate(self, candidate: str | None) -> None:
        """A trickled remote candidate (the SDP ``candidate:`` value), or None at the end."""
        await self._ice.addRemoteCandidate(
            None if candidate is None else candidate_from_sdp(candidate.removeprefix("candidate:"))
        )

    def _plan(self) -> list[MLine]:
        if self._planned is None:
            self._planned = list(self._mlines)
        return self._planned

    def add_send_section(self, kind: str) -> MediaSection:
        """Plan a new ``sendonly`` m-line (a forwarded stream) for the next ``create_offer``.

        It takes the place of an m-line of the same kind that the SFU added and removed in an
        earlier negotiation, if there is one (new mid), or goes at the end.
        """
        template = next((s for s in self.sections if s.kind == kind), None)
        if template is None:
            raise NegotiationError(f"the participant negotiated no {kind} m-line")
        planned = self._plan()
        mid = f"{SFU_MID_PREFIX}{self._next_mid}"
        self._next_mid += 1
        rtx = free_payload_type(planned) if kind == "video" else None
        section = new_send_section(kind, mid, template, self._ssrcs, rtx)
        for i, (now, then) in enumerate(zip(planned, self._mlines, strict=False)):
            if (
                not isinstance(now, MediaSection)
                and now is then
                and now.kind == kind
                and now.port == 0
                and now.rtp.muxId.startswith(SFU_MID_PREFIX)
            ):
                planned[i] = section
                return section
        planned.append(section)
        return section

    def remove_send_section(self, section: MediaSection) -> None:
        """Plan ``section`` (a forwarded stream) to be rejected (port 0) in the next offer."""
        planned = self._plan()
        for i, mline in enumerate(planned):
            if mline is section:
                planned[i] = rejected_mline(
                    section.kind,
                    section.mid,
                    "UDP/TLS/RTP/SAVPF",
                    [c.payloadType for c in section.codecs],
                    section.codecs,
                )
                return
        raise ValueError("not a planned m-line")

    async def create_offer(self) -> str:
        """An offer with the m-lines as planned (renegotiation)."""
        local = await self._local()
        self._version += 1
        role = self._dtls._role
        return build_offer(self._plan(), local, role, self._version)

    def set_answer(self, answer: str) -> None:
        """Apply the participant's answer to ``create_offer``: the planned m-lines hold now."""
        offered = self._plan()
        parsed = check_answer(answer, offered)
        for media, mline in zip(parsed.media, offered, strict=True):
            if isinstance(mline, MediaSection) and media.port == 0:
                mline.direction = "inactive"
            elif isinstance(mline, MediaSection) and mline.direction == "sendonly":
                # RTX only where the answer kept it; the others get plain retransmissions.
                mline.rtx_payload_type = answered_rtx(media, mline.payload_type)
        self._mlines = offered
        self._planned = None

    # -- connection --------------------------------------------------------------------------------

    async def _connect(self, remote_ice: RTCIceParameters, remote_dtls: Any) -> None:
        await self._ice.start(remote_ice)
        if self._ice.state != "completed":
            log.info("participant transport: ICE failed")
            await self.close()
            return
        await self._dtls.start(remote_dtls)
        if self._dtls.state == "connected":
            self._connection.fast_path = self._receive_srtp
            self._connected.set()
            if self._sctp is not None and self._sctp_section is not None:
                size = self._sctp_section.remote_max_message_size
                caps = RTCSctpCapabilities(maxMessageSize=size or 65536)
                await self._sctp.start(caps, self._sctp_section.remote_port)
        else:
            log.info("participant transport: DTLS failed")
            await self.close()

    def _dtls_state_changed(self) -> None:
        if self._dtls.state in ("closed", "failed") and not self._closed.is_set():
            self._connection.fast_path = None
            self._closed.set()
            self._connected.clear()
            self._close_task = asyncio.ensure_future(self.close())

    async def wait_connected(self) -> None:
        """Wait for DTLS-SRTP to be up; raise ``TransportClosedError`` if it ends first."""
        closed = asyncio.ensure_future(self._closed.wait())
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({closed, connected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            connected.cancel()
        if not self._connected.is_set():
            raise TransportClosedError("participant transport closed before connecting")

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (either side closed it, or ICE/DTLS failed)."""
        await self._closed.wait()

    @property
    def connected(self) -> bool:
        """Whether packets can be sent."""
        return self._connected.is_set()

    async def close(self) -> None:
        """Close DTLS (close_notify to the participant) and ICE; idempotent."""
        self._connection.fast_path = None
        self._connected.clear()
        self._closed.set()
        task, self._connect_task = self._connect_task, None
        if task is not None and not task.done():
            task.cancel()
        if self._sctp is not None:
            sctp, self._sctp = self._sctp, None
            await sctp.stop()
        await self._dtls.stop()
        await self._ice.stop()
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback()

    def _datachannel(self, channel: RTCDataChannel) -> None:
        if self._on_datachannel is not None:
            self._on_datachannel(channel)
        else:
            channel.close()

    # -- packets -----------------------------------------------------------------------------------

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.info("participant transport: dropped datagram (%s), %d so far", why, self.dropped)

    def _receive_srtp(self, data: bytes) -> None:
        rx = self._rx
        if rx is None:  # pragma: no cover - the fast path is set only after the keys
            return
        try:
            if 191 < data[1] < 224 if len(data) > 1 else False:  # rtp.is_rtcp, inlined
                plain = rx.unprotect_rtcp(data)
                self.rtcp_received += 1
                callback = self._on_rtcp
            else:
                plain = rx.unprotect(data)
                self.rtp_received += 1
                callback = self._on_rtp
        except pylibsrtp.Error:
            self._drop("srtp")
            return
        try:
            callback(plain)
        except Exception:
            # A failing consumer must not close the socket (asyncio's fate for a protocol that
            # raises): log it, keep the connection.
            log.exception("participant transport: packet callback failed")

    async def _filtered_recv(self) -> bytes:
        recv = self._connection.recv
        dtls = self._dtls
        while True:
            data = await recv()
            first = data[0] if data else 0
            if 19 < first < 64:
                return data
            if 127 < first < 192 and len(data) >= 12:
                if dtls._rx_srtp is not None:
                    return data
                self._drop("srtp before keys")
            else:
                self._drop("not dtls or srtp")

    def _send(self, data: bytes) -> None:
        pair = self._connection._nominated.get(1)
        if pair is not self._pair:
            self._use_pair(pair)
        if not self._connected.is_set():
            raise TransportClosedError("participant transport is not connected")
        self.sent += 1
        sock = self._socket
        if sock is not None:
            try:
                sock.sendto(data, self._address)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as error:
                # As asyncio's transport would: the protocol hears of it, nothing raises.
                self._protocol.error_received(error)
                return
        # The socket would block, or datagrams wait in the transport's queue: queue behind them
        # (keeping the order), and send directly again once the queue is empty.
        transport = self._protocol.transport
        transport.sendto(data, self._address)
        self._socket = None if transport.get_write_buffer_size() else _socket_of(transport)

    def _use_pair(self, pair: CandidatePair | None) -> None:
        if pair is None:
            raise TransportClosedError("participant transport is not connected")
        self._pair = pair
        self._protocol = pair.protocol
        self._address = pair.remote_addr
        self._socket = _socket_of(pair.protocol.transport)

    def send_rtp(self, data: bytes | bytearray) -> None:
        """SRTP-protect and send one raw RTP packet; ``TransportClosedError`` if not connected."""
        tx = self._tx
        if tx is None:
            raise TransportClosedError("participant transport is not connected")
        self._send(tx.protect(data))

    def send_rtcp(self, data: bytes | bytearray) -> None:
        """SRTCP-protect and send one raw (compound) RTCP packet."""
        tx = self._tx
        if tx is None:
            raise TransportClosedError("participant transport is not connected")
        self._send(tx.protect_rtcp(data))

    def remote_candidates(self) -> list[tuple[str, int]]:
        """The participant's candidates known so far, as (address, port)."""
        return [(c.ip, c.port) for c in self._ice.getRemoteCandidates()]

    def local_candidates(self) -> list[Candidate]:
        """The host candidates the SFU listens on (aioice form)."""
        return list(self._connection.local_candidates)
