"""The authenticated way into the head's MLflow server for the cluster's workers.

MLflow's tracking server has no authentication of its own worth trusting here (and agents unpickle
the models it serves), so on the head it listens on 127.0.0.1 only. Workers reach it through this
proxy on the head's private address, which forwards a request only when it carries
`Authorization: Bearer <token>` (MLflow's client sends MLFLOW_TRACKING_TOKEN that way). The token
is derived from the Ray cluster's auth token (`~/.ray/auth_token`, which `ray up` already copies to
every node): HMAC-SHA256(ray token, "kis-ray-trader mlflow"), so nothing new has to be distributed
and whoever cannot join the Ray cluster cannot reach MLflow either.

    python -m cluster.mlflow_proxy serve --listen 10.0.1.5:5001 --upstream 127.0.0.1:5000
    export MLFLOW_TRACKING_URI=http://10.0.1.5:5001 MLFLOW_TRACKING_TOKEN=$(python -m cluster.mlflow_proxy token)

Bodies stream through in both directions (model checkpoints are large); hop-by-hop headers and
the Authorization header are not forwarded; the upstream sees its own host name, so MLflow's
allowed-hosts check passes. Plain Python (stdlib), no Ray.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "authorization", "host"}
CHUNK = 1 << 16


def ray_token_file() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).expanduser()


def derive_token(ray_token: str) -> str:
    return hmac.new(ray_token.strip().encode(), b"kis-ray-trader mlflow", hashlib.sha256).hexdigest()


def token_from_ray(path: Path | None = None) -> str:
    path = path or ray_token_file()
    if not path.is_file():
        raise FileNotFoundError(f"no Ray auth token at {path}: the proxy's token is derived from it "
                                "(`ray get-auth-token --generate` on the head; ray up copies it to workers)")
    return derive_token(path.read_text())


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{hostport!r}: want HOST:PORT")
    return host, int(port)


def make_server(listen: tuple[str, int], upstream: tuple[str, int], token: str) -> ThreadingHTTPServer:
    expected = f"Bearer {token}".encode()

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):   # no request lines (they would carry run ids, paths) on stderr
            pass

        def _refuse(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            if code == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, expected):
                self.close_connection = True
                return self._refuse(401, "MLflow behind kis-ray-trader's proxy: set MLFLOW_TRACKING_TOKEN")
            upstream_conn = http.client.HTTPConnection(*upstream, timeout=300)
            try:
                upstream_conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                upstream_conn.putheader("Host", f"{upstream[0]}:{upstream[1]}")
                for key, value in self.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        upstream_conn.putheader(key, value)
                chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                if chunked:
                    upstream_conn.putheader("Transfer-Encoding", "chunked")
                upstream_conn.endheaders()
                if chunked:
                    self._copy_chunked_request(upstream_conn)
                else:
                    left = int(self.headers.get("Content-Length") or 0)
                    while left > 0:
                        data = self.rfile.read(min(CHUNK, left))
                        if not data:
                            break
                        upstream_conn.send(data)
                        left -= len(data)
                resp = upstream_conn.getresponse()
            except OSError as exc:
                return self._refuse(502, f"MLflow upstream {upstream[0]}:{upstream[1]} unreachable: {type(exc).__name__}")
            try:
                self.send_response(resp.status, resp.reason)
                length = resp.getheader("Content-Length")
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                if length is not None:
                    self.send_header("Content-Length", length)
                elif self.command != "HEAD":
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if self.command == "HEAD":
                    return
                while data := resp.read(CHUNK):
                    self.wfile.write(data if length is not None else b"%x\r\n%s\r\n" % (len(data), data))
                if length is None:
                    self.wfile.write(b"0\r\n\r\n")
            finally:
                upstream_conn.close()

        def _copy_chunked_request(self, conn: http.client.HTTPConnection) -> None:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass   # trailers
                    conn.send(b"0\r\n\r\n")
                    return
                data = self.rfile.read(size)
                self.rfile.readline()
                conn.send(b"%x\r\n%s\r\n" % (len(data), data))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(listen, Proxy)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.mlflow_proxy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="forward authenticated requests to the MLflow server")
    s.add_argument("--listen", required=True, help="HOST:PORT, the head's private address (never 0.0.0.0)")
    s.add_argument("--upstream", default="127.0.0.1:5000", help="the MLflow server (HOST:PORT)")
    sub.add_parser("token", help="print this node's MLFLOW_TRACKING_TOKEN (derived from the Ray auth token)")
    args = parser.parse_args(argv)
    try:
        token = token_from_ray()
        if args.cmd == "token":
            print(token)
            return 0
        listen = _split(args.listen)
        if listen[0] in ("0.0.0.0", "::", ""):
            raise ValueError("--listen must name one address (the head's private one), not every interface")
        make_server(listen, _split(args.upstream), token).serve_forever()
    except (ValueError, FileNotFoundError) as exc:
        print(f"mlflow_proxy: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
