"""The three-legged OAuth 1.0a dance Jira's tutorials script, through the proxy, with
requests-oauthlib's OAuth1Session (RSA-SHA1, as application links use), the user approving
on the proxy's page with HTTP Basic, then the Python `jira` client's `oauth=` option."""
import os
import re

import requests
from jira import JIRA, JIRAError
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1Session

url = os.environ["PROXY_URL"]
with open(os.environ["KEY_PEM"]) as f:
    key = f.read()

oauth = OAuth1Session("applink-rsa", signature_method=SIGNATURE_RSA, rsa_key=key, callback_uri="oob")
request_token = oauth.fetch_request_token(url + "/plugins/servlet/oauth/request-token")

page = requests.get(url + "/plugins/servlet/oauth/authorize", params={"oauth_token": request_token["oauth_token"]},
                    auth=("alice", "alice-pw"))
assert page.status_code == 200, page.status_code
atl_token = re.search(r'name="atl_token" value="([^"]+)"', page.text).group(1)
allowed = requests.post(url + "/plugins/servlet/oauth/authorize", auth=("alice", "alice-pw"),
                        data={"oauth_token": request_token["oauth_token"], "atl_token": atl_token, "approve": "Allow"})
assert allowed.status_code == 200, allowed.status_code
verifier = re.search(r"<code>([^<]+)</code>", allowed.text).group(1)

oauth = OAuth1Session("applink-rsa", signature_method=SIGNATURE_RSA, rsa_key=key,
                      resource_owner_key=request_token["oauth_token"],
                      resource_owner_secret=request_token["oauth_token_secret"], verifier=verifier)
access = oauth.fetch_access_token(url + "/plugins/servlet/oauth/access-token")

client = JIRA(server=url, get_server_info=False, max_retries=0, oauth={
    "access_token": access["oauth_token"],
    "access_token_secret": access["oauth_token_secret"],
    "consumer_key": "applink-rsa",
    "key_cert": key,
})
me = client.myself()
assert me["name"] == "alice", me

# Alice sees the application among her tokens and revokes it; the client is refused from then on.
mine = requests.get(url + "/plugins/servlet/oauth/users/access-tokens", auth=("alice", "alice-pw"),
                    headers={"Accept": "application/json"}).json()["accessTokens"]
assert [t["consumerKey"] for t in mine] == ["applink-rsa"], mine
gone = requests.delete(url + "/plugins/servlet/oauth/users/access-tokens/" + mine[0]["id"], auth=("alice", "alice-pw"))
assert gone.status_code == 204, gone.status_code
try:
    client.myself()
    raise SystemExit("a revoked access token still works")
except JIRAError as e:
    assert e.status_code == 401, e.status_code
print("interop ok")
