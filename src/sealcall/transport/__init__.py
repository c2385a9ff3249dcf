"""Transports for call events: the interface, and an in-memory implementation for tests."""

from .base import RoomEvent, RoomEventListener, Transport
from .memory import InMemoryHub, InMemoryTransport

__all__ = ["InMemoryHub", "InMemoryTransport", "RoomEvent", "RoomEventListener", "Transport"]
