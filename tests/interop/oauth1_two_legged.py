"""Two-legged OAuth 1.0a through the proxy with requests-oauthlib, as Jira consumers sign:
RSA-SHA1 with impersonation (`xoauth_requestor_id`, how Atlassian application links act
for a user), a signed form body, a wrong key, and an HMAC-SHA1 consumer."""
import os
import sys

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import SIGNATURE_RSA
from requests_oauthlib import OAuth1

url = os.environ["PROXY_URL"]
with open(os.environ["KEY_PEM"]) as f:
    key = f.read()

auth = OAuth1("applink-rsa", signature_method=SIGNATURE_RSA, rsa_key=key)
r = requests.get(url + "/rest/api/2/myself", params={"xoauth_requestor_id": "alice"}, auth=auth)
assert r.status_code == 200, (r.status_code, r.headers.get("WWW-Authenticate"), r.text)
assert r.json()["name"] == "alice", r.text

r = requests.post(url + "/rest/api/2/issue/X-1/comment", params={"xoauth_requestor_id": "alice"},
                  data={"body": "a signed form body"}, auth=auth)
assert r.status_code == 200, (r.status_code, r.headers.get("WWW-Authenticate"))

other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
r = requests.get(url + "/rest/api/2/myself", params={"xoauth_requestor_id": "alice"},
                 auth=OAuth1("applink-rsa", signature_method=SIGNATURE_RSA, rsa_key=other))
assert r.status_code == 401, r.status_code
assert 'oauth_problem="signature_invalid"' in r.headers["WWW-Authenticate"], r.headers

# A captured request sent again (same nonce, same signature) is refused.
prepared = requests.Request("GET", url + "/rest/api/2/myself", params={"xoauth_requestor_id": "alice"},
                            auth=auth).prepare()
with requests.Session() as s:
    assert s.send(prepared).status_code == 200
    replay = s.send(prepared)
    assert replay.status_code == 401, replay.status_code
    assert 'oauth_problem="nonce_used"' in replay.headers["WWW-Authenticate"], replay.headers

# A signed form body changed on the way is refused.
prepared = requests.Request("POST", url + "/rest/api/2/issue/X-1/comment", params={"xoauth_requestor_id": "alice"},
                            data={"body": "what alice wrote"}, auth=auth).prepare()
prepared.body = "body=what+mallory+wrote"
prepared.headers["Content-Length"] = str(len(prepared.body))
with requests.Session() as s:
    tampered = s.send(prepared)
assert tampered.status_code == 401, tampered.status_code
assert 'oauth_problem="signature_invalid"' in tampered.headers["WWW-Authenticate"], tampered.headers

r = requests.get(url + "/rest/api/2/myself", auth=OAuth1("reporting", client_secret=os.environ["HMAC_SECRET"]))
assert r.status_code == 200, (r.status_code, r.headers.get("WWW-Authenticate"))
assert r.json()["name"] == "reporting-bot", r.text

print("interop ok")
