"""A TCP relay on 127.0.0.1 that a test can cut silently and restore: a network partition.

Put between one process and the kube-apiserver (a kubeconfig whose ``server`` is
:attr:`Relay.address`), it forwards bytes both ways until :meth:`Relay.cut`.  Cut,
it is a partition, not a crash: every connection, old and new, stays open and
nothing passes either way, so the process sees requests that never answer rather
than refusals.  Bytes that arrive meanwhile are held, not dropped, and
:meth:`Relay.restore` delivers them, as TCP would retransmit them once the
partition heals: a request sent into the partition may still reach the server
afterwards, even from a process that has exited since.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Forward 127.0.0.1:<port> to ``upstream`` (host, port) until cut; see the module."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cut_off(self) -> bool:
        return not self._flowing.is_set()

    def cut(self) -> None:
        """From now on nothing passes, either way; connections stay open."""
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again, the held bytes first."""
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._keep(conn)
            threading.Thread(target=self._connect, args=(conn,), daemon=True).start()

    def _connect(self, conn: socket.socket) -> None:
        # Cut off, a new connection is accepted and held; the server sees it on restore.
        self._flowing.wait()
        if self._closed:
            return
        try:
            up = socket.create_connection(self.upstream)
        except OSError:
            conn.close()
            return
        self._keep(up)
        threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            self._flowing.wait()
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            # Read just before a cut: held until the restore, then delivered.
            self._flowing.wait()
            if self._closed:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                src.close()
                return
