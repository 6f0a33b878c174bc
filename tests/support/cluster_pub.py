#!/usr/bin/env python3
"""QoS 1 telemetry with scripted incidents, for tests/cluster.test.sh.

    cluster_pub.py PORTS DISTRICTS CYCLES

PORTS: MQTT ports on 127.0.0.1 (comma-separated), used in turn; DISTRICTS:
d01,d02,...; each cycle sends city/<district>/river/s1 {"ts":..,"level":L} for
L in 1, 7, 7, 1 (a firing, then a resolution, per district and cycle). Every
message is published until the broker acknowledges it (PUBACK), on the next
node when one fails: at least once, as a sensor gateway that republishes
does; exits 1 when no node takes a message for 60 s. Timestamps are the wall clock in ms, strictly increasing. Prints
"published N retried R" on stdout. MQTT 3.1.1 by hand: no library needed.
"""
import socket
import struct
import sys
import time

LEVELS = (1, 7, 7, 1)


def remaining(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def read_packet(sock):
    head = sock.recv(1)
    if not head:
        raise ConnectionError("closed")
    mult, n = 1, 0
    while True:
        b = sock.recv(1)
        if not b:
            raise ConnectionError("closed")
        n += (b[0] & 0x7F) * mult
        mult *= 128
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head[0], body


class Publisher:
    def __init__(self, ports):
        self.ports, self.turn, self.sock, self.pid, self.retried = ports, 0, None, 0, 0

    def connect(self):
        port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        var = string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 30)
        payload = string("cbt-pub-%d-%d" % (port, time.time_ns() % 1000000))
        s.sendall(bytes([0x10]) + remaining(len(var) + len(payload)) + var + payload)
        kind, body = read_packet(s)
        if kind >> 4 != 2 or body[1] != 0:
            raise ConnectionError("CONNACK refused")
        self.sock = s

    def publish(self, topic, payload):
        self.deadline = time.monotonic() + 60
        while True:
            try:
                if self.sock is None:
                    self.connect()
                self.pid = self.pid % 65535 + 1
                var = string(topic) + struct.pack(">H", self.pid)
                data = payload.encode()
                self.sock.sendall(bytes([0x32]) + remaining(len(var) + len(data)) + var + data)
                while True:
                    kind, body = read_packet(self.sock)
                    if kind >> 4 == 4 and struct.unpack(">H", body[:2])[0] == self.pid:
                        return
            except (OSError, ConnectionError):
                if time.monotonic() > self.deadline:
                    raise SystemExit("cluster_pub: no broker took %s for 60 s" % topic)
                self.retried += 1
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                time.sleep(0.2)


def main():
    ports = [int(p) for p in sys.argv[1].split(",")]
    districts = sys.argv[2].split(",")
    cycles = int(sys.argv[3])
    pub = Publisher(ports)
    n, last = 0, 0
    for _ in range(cycles):
        for level in LEVELS:
            for d in districts:
                ts = max(int(time.time() * 1000), last + 1)
                last = ts
                pub.publish("city/%s/river/s1" % d, '{"ts":%d,"level":%d}' % (ts, level))
                n += 1
            time.sleep(0.15)
    if pub.sock is not None:
        pub.sock.sendall(bytes([0xE0, 0]))
        pub.sock.close()
    print("published %d retried %d" % (n, pub.retried))


if __name__ == "__main__":
    main()
