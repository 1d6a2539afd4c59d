"""A stand-in Jira that trusts an application link the way Jira does, checked with an
implementation independent of the proxy's: oauthlib verifies each two-legged RSA-SHA1
request (signature over Jira's own base URL, timestamp, single-use nonce, consumer key) and
the request runs as `xoauth_requestor_id`. Like Jira, it answers `X-AUSERNAME`, starts a
session (`JSESSIONID`, plus `atlassian.xsrf.token`) for a signed request, and runs later
requests carrying that cookie as the session's user. Anything else runs anonymously.

Environment: APPLINK_PUB (the consumer's public key PEM), APPLINK_CONSUMER, JIRA_BASE (the
URL Jira believes it serves). Prints its port on the first line.
/test/stats gives how requests ran; /test/expire ends every session."""
import json
import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from http.cookies import SimpleCookie

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

PUBLIC_KEY = open(os.environ["APPLINK_PUB"]).read()
CONSUMER = os.environ.get("APPLINK_CONSUMER", "jira-auth-proxy")
BASE = os.environ["JIRA_BASE"].rstrip("/")

lock = threading.Lock()
sessions = {}
nonces = set()
stats = {"signed": 0, "session": 0, "anonymous": 0, "refused": 0}


class Validator(RequestValidator):
    enforce_ssl = False
    dummy_client = "dummy"

    def check_client_key(self, client_key):
        return True

    def check_nonce(self, nonce):
        return 16 <= len(nonce) <= 64

    def validate_client_key(self, client_key, request):
        return client_key == CONSUMER

    def get_rsa_key(self, client_key, request):
        return PUBLIC_KEY

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request,
                                     request_token=None, access_token=None):
        with lock:
            key = (client_key, timestamp, nonce)
            if key in nonces:
                return False
            nonces.add(key)
            return True


endpoint = SignatureOnlyEndpoint(Validator())


class Jira(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, user=None, cookies=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-AUSERNAME", user or "anonymous")
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/test/stats":
            with lock:
                return self.answer(200, dict(stats))
        if self.path == "/test/expire":
            with lock:
                sessions.clear()
            return self.answer(200, {"expired": True})
        user, how, cookies = None, "anonymous", []
        auth = self.headers.get("Authorization", "")
        if auth.startswith("OAuth "):
            headers = {"Authorization": auth}
            form = self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
            if form:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            valid, request = endpoint.validate_request(
                BASE + self.path, self.command, body.decode() if form else None, headers)
            params = dict(request.uri_query_params) if valid else {}
            if valid and params.get("xoauth_requestor_id"):
                user, how = params["xoauth_requestor_id"], "signed"
                sid = secrets.token_hex(16)
                with lock:
                    sessions[sid] = user
                cookies = ["JSESSIONID=%s; Path=/; HttpOnly" % sid,
                           "atlassian.xsrf.token=%s|lin; Path=/" % secrets.token_hex(8)]
            else:
                how = "refused"
        else:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
            sid = jar["JSESSIONID"].value if "JSESSIONID" in jar else None
            with lock:
                user = sessions.get(sid)
            how = "session" if user else "anonymous"
        with lock:
            stats[how] += 1
        if how == "refused":
            return self.answer(401, {"errorMessages": ["OAuth signature rejected"], "errors": {}})
        self.answer(200, {"name": user, "how": how, "path": self.path}, user, cookies)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


server = ThreadingHTTPServer(("127.0.0.1", 0), Jira)
print(server.server_address[1], flush=True)
sys.stdout.close()
server.serve_forever()
