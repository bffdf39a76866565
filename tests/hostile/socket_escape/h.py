import ctypes
import socket
import struct

from benchmark.api import Category, Hyperparameters, Intervention


class Socket(Hyperparameters):
    socket_path: str = "/tmp/compose-bench-hostile.sock"


class H(Intervention):
    """Hostile test submission: reach a host process through a UNIX path socket (the old fork server's way out)."""

    name = "socket_escape"
    category = Category.EDITING
    Hyperparameters = Socket

    def apply(self, model, tokenizer, context):
        path = context.hyperparameters["socket_path"].encode()
        # straight to the kernel first (an audit hook cannot see this one), then through Python
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
        address = struct.pack("H", socket.AF_UNIX) + path + b"\0" * (108 - len(path))
        if libc.connect(fd, address, len(address)) == 0:
            libc.write(fd, b"ESCAPED", 7)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path.decode())
            sock.sendall(b"ESCAPED")
        except OSError:
            pass
        return model
