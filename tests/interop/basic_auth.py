"""Real Jira clients through the proxy with HTTP Basic: the Python `jira` library and
atlassian-python-api, unchanged. Run by tests/interop.rs with PROXY_URL set."""
import os
import sys

from atlassian import Jira
from jira import JIRA, JIRAError

url = os.environ["PROXY_URL"]

client = JIRA(server=url, basic_auth=("alice", "alice-pw"), get_server_info=False, max_retries=0)
me = client.myself()
assert me["name"] == "alice", me

try:
    JIRA(server=url, basic_auth=("alice", "wrong"), get_server_info=False, max_retries=0).myself()
    sys.exit("a wrong password was accepted")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

try:
    JIRA(server=url, get_server_info=False, max_retries=0).myself()
    sys.exit("an anonymous call was accepted")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

atl = Jira(url=url, username="alice", password="alice-pw")
assert atl.myself()["name"] == "alice"

print("interop ok")
