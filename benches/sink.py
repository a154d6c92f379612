#!/usr/bin/env python3
"""Body sink for benches/load.sh: a minimal HTTP/1.1 upstream on 127.0.0.1:PORT that reads
and discards each request's whole body (Content-Length or chunked) and only then answers
200 with the number of body bytes it received. A timed upload through a proxy therefore ends
only once the last byte has reached the upstream (nginx's `return 200` may answer before
reading the body). Keep-alive; one thread per connection. Usage: sink.py PORT"""
import socket
import sys
import threading

BUF = 1 << 20


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def fill(self):
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == BUF:
            k = self.end - self.start
            self.buf[0:k] = self.buf[self.start:self.end]
            self.start, self.end = 0, k
        n = self.sock.recv_into(self.view[self.end:])
        if n == 0:
            raise EOFError
        self.end += n

    def line(self):
        while True:
            i = self.buf.find(b"\n", self.start, self.end)
            if i >= 0:
                out = bytes(self.buf[self.start:i])
                self.start = i + 1
                return out.rstrip(b"\r")
            if self.end - self.start > 65536:
                raise ValueError("line too long")
            self.fill()

    def skip(self, n):
        while n:
            if self.start == self.end:
                self.fill()
            k = min(n, self.end - self.start)
            self.start += k
            n -= k


def serve(sock):
    c = Conn(sock)
    try:
        while True:
            if not c.line():  # request line (tolerate a stray CRLF)
                continue
            h = {}
            while True:
                line = c.line()
                if not line:
                    break
                k, _, v = line.partition(b":")
                h[k.strip().lower()] = v.strip().lower()
            if b"100-continue" in h.get(b"expect", b""):
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            n = 0
            if b"chunked" in h.get(b"transfer-encoding", b""):
                while True:
                    size = int(c.line().split(b";")[0], 16)
                    if size == 0:
                        while c.line():  # trailers, then the final CRLF
                            pass
                        break
                    c.skip(size)
                    n += size
                    c.line()
            elif b"content-length" in h:
                n = int(h[b"content-length"])
                c.skip(n)
            body = b"%d\n" % n
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            if h.get(b"connection") == b"close":
                return
    except (EOFError, ConnectionError, ValueError):
        pass
    finally:
        sock.close()


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(256)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
