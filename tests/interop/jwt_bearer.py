"""An OIDC access token minted by PyJWT (key made by `cryptography`), its JWKS handed to the
test identity provider, then used through the proxy by the Python `jira` client with
`token_auth=` exactly as it would use a Jira personal access token."""
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jira import JIRA, JIRAError
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

url = os.environ["PROXY_URL"]
issuer = os.environ["ISSUER"]
jwks_out = os.environ["JWKS_OUT"]

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
keys = []
for kid, alg, key, algo in (("py-rsa", "RS256", rsa_key, RSAAlgorithm), ("py-ec", "ES256", ec_key, ECAlgorithm)):
    jwk = json.loads(algo.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    keys.append(jwk)
with open(jwks_out + ".tmp", "w") as f:
    json.dump({"keys": keys}, f)
os.replace(jwks_out + ".tmp", jwks_out)

now = int(time.time())
claims = {"iss": issuer, "aud": "jira", "sub": "u-123", "preferred_username": "frank", "iat": now, "nbf": now, "exp": now + 300}
for kid, alg, key in (("py-rsa", "RS256", rsa_key), ("py-ec", "ES256", ec_key)):
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
    me = JIRA(server=url, token_auth=token, get_server_info=False, max_retries=0).myself()
    assert me["name"] == "frank", me

expired = jwt.encode(dict(claims, exp=now - 3600, iat=now - 7200, nbf=now - 7200), rsa_key, algorithm="RS256", headers={"kid": "py-rsa"})
try:
    JIRA(server=url, token_auth=expired, get_server_info=False, max_retries=0).myself()
    sys.exit("an expired token was accepted")
except JIRAError as e:
    assert e.status_code == 401, e.status_code

print("interop ok")
