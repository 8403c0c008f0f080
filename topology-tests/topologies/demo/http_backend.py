# A demo backend: answers every GET with its name, and /healthz with "ok", on IPv4 `addr` and every IPv6
# address; UDP datagrams to port 5353 get its name back ("echo DATA": the name and DATA). Stops by itself after an hour.
import http.server, socket, sys, threading, time

addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class H(http.server.BaseHTTPRequestHandler):
    # Keep-alive for HTTP/1.1 clients (the sync scenarios hold connections open); HTTP/1.0 ones are closed.
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (b"ok\n" if self.path == "/healthz" else (name + "\n").encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

class S(http.server.ThreadingHTTPServer):
    # A listen backlog as a real server's (nginx: 511). socketserver's default of 5 overflows under the soak's
    # load, and the kernel drops SYNs and handshake ACKs it has no room for: a 1 s stall for each.
    request_queue_size = 1024

class H6(S):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

def udp(family, bind):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((bind, 5353))
    while True:
        d, peer = s.recvfrom(65535)
        # "echo ..." comes back whole after the name (large datagrams: fragmented both ways); else the name.
        s.sendto(name.encode() + b" " + d[5:] if d.startswith(b"echo ") else name.encode(), peer)

def bound(make):
    # In a container, the address arrives with containerlab's `exec` lines after this starts: wait for it.
    for _ in range(300):
        try:
            return make()
        except OSError:
            time.sleep(0.1)
    return make()

srv = bound(lambda: S((addr, port), H))
srv6 = H6(("::", port), H)
threading.Thread(target=srv6.serve_forever, daemon=True).start()
for fam, bind in ((socket.AF_INET, addr), (socket.AF_INET6, "::")):
    threading.Thread(target=udp, args=(fam, bind), daemon=True).start()
threading.Thread(target=lambda: (time.sleep(3600), srv.shutdown()), daemon=True).start()
srv.serve_forever()
