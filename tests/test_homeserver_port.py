"""The free-port check of ``sealcall homeserver up``: a port in TIME_WAIT is free, a listened one
is not."""

import socket

from sealcall.homeserver import free_port, port_is_free


def test_port_left_in_time_wait_by_a_closed_server_is_free() -> None:
    # A server that closes a connection first leaves it in TIME_WAIT on its own port (what
    # `homeserver down` leaves behind after answering a client); nothing listens any more.
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first
    assert client.recv(1) == b""
    listener.close()
    client.close()
    assert port_is_free(port)


def test_port_with_a_listener_is_not_free() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        assert not port_is_free(port)
    assert port_is_free(port)
