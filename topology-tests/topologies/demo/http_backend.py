# A demo backend: answers every GET with its name, and /healthz with "ok". Stops by itself after an hour.
import http.server, sys, threading, time

addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (b"ok\n" if self.path == "/healthz" else (name + "\n").encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer((addr, port), H)
threading.Thread(target=lambda: (time.sleep(3600), srv.shutdown()), daemon=True).start()
srv.serve_forever()
