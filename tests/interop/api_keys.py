"""API keys through the proxy with the Python `jira` client, unchanged: as the password
of Basic (`basic_auth=(user, key)`, how Atlassian API tokens are used) and as a bearer
token (`token_auth=key`, how Jira personal access tokens are used)."""
import os
import sys

from jira import JIRA, JIRAError

url = os.environ["PROXY_URL"]
key = os.environ["API_KEY"]
owner = os.environ["KEY_OWNER"]

me = JIRA(server=url, basic_auth=(owner, key), get_server_info=False, max_retries=0).myself()
assert me["name"] == owner, me

me = JIRA(server=url, token_auth=key, get_server_info=False, max_retries=0).myself()
assert me["name"] == owner, me

try:
    JIRA(server=url, basic_auth=("someone-else", key), get_server_info=False, max_retries=0).myself()
    sys.exit("a key was accepted for a user who does not own it")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

try:
    JIRA(server=url, token_auth=key[:-1] + "x", get_server_info=False, max_retries=0).myself()
    sys.exit("a wrong key was accepted")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

print("interop ok")
