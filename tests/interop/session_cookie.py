"""The Python `jira` client's cookie login through the proxy: `JIRA(auth=(user, password))`
logs in at /rest/auth/1/session, keeps the cookie, and logs in again after a 401. It
creates an issue and uploads an attachment on that session. Run by tests/interop.rs."""
import os
import sys
import tempfile

from jira import JIRA, JIRAError

url = os.environ["PROXY_URL"]

client = JIRA(server=url, auth=("alice", "alice-pw"), max_retries=0)
assert client.server_info()["version"] == "9.12.2"
assert client.myself()["name"] == "alice"
cookies = client._session.cookies
assert "JAPSESSION" in cookies, list(cookies.keys())

issue = client.create_issue(fields={"project": {"key": "X"}, "summary": "made through the proxy",
                                    "issuetype": {"name": "Task"}})
assert issue.key == "X-1", issue.key

with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("notes for the issue\n" * 100)
    path = f.name
attachment = client.add_attachment(issue=issue.key, attachment=path, filename="notes.txt")
assert attachment.filename == "notes.txt", attachment.raw

# The server ends the session (logout elsewhere): the client gets a 401, logs in again
# by itself and goes on.
old = cookies.get("JAPSESSION")
client._session.delete(url + "/rest/auth/1/session")
assert client.myself()["name"] == "alice"
assert client._session.cookies.get("JAPSESSION") not in (None, old)

try:
    JIRA(server=url, auth=("alice", "wrong"), max_retries=0)
    sys.exit("a wrong password was accepted")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

print("interop ok")
