"""A gRPC server for the grpc check's tests, on grpcio (Debian's python3-grpcio).

It serves grpc.health.v1.Health/Check with raw bytes (no generated code): the serving status is read from a file
at each call, so the test can flip it; the service names "" and "web" are known, any other is NOT_FOUND.
Usage: grpc_health_server.py STATUS_FILE [CERT KEY]; prints the port, serves for at most 120 s.
"""

import sys
from concurrent import futures

import grpc


def main():
    status_file = sys.argv[1]

    def check(request, context):
        name = b""
        if request[:1] == b"\x0a":
            name = request[2 : 2 + request[1]]
        if name not in (b"", b"web"):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        with open(status_file) as f:
            status = int(f.read().strip())
        return bytes([0x08, status])

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    if len(sys.argv) > 3:
        with open(sys.argv[2], "rb") as c, open(sys.argv[3], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination(timeout=120)


main()
