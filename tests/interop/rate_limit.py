"""The Python `jira` client against a rate-limited proxy: it reads the 429's Retry-After (and
logs Jira Data Center's X-RateLimit-* headers), waits, retries, and every call succeeds.
Run by tests/interop.rs."""
import logging
import os
import time

from jira import JIRA

url = os.environ["PROXY_URL"]
seen = []


class Capture(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())


logging.getLogger("jira").addHandler(Capture())
logging.getLogger("jira").setLevel(logging.DEBUG)

client = JIRA(server=url, basic_auth=("alice", "alice-pw"), get_server_info=False, max_retries=3)
start = time.monotonic()
for _ in range(4):
    assert client.myself()["name"] == "alice"
took = time.monotonic() - start
assert any("429" in m for m in seen), seen
assert took >= 0.5, f"the client did not wait ({took:.2f}s)"
print("interop ok")
