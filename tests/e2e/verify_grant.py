#!/usr/bin/env python3
"""Verifies Countersign grants as an independent third party would: with Python and standard
libraries, none of Countersign's code.

- the JWS: compact form, `typ` and `alg`, the Ed25519 key by `kid` from the broker's registry
  (`cryptography`);
- the claims: issuer, subject, audience, broker, lifetime, and the action hash recomputed with
  an independent RFC 8785 implementation (`rfc8785`);
- the WebAuthn assertion with an independent relying party (`webauthn`, Duo Labs' py_webauthn),
  configured with the exact origin `https://countersign.dev`, rp_id `countersign.dev`, user
  verification required, over the challenge SHA-256(JCS(claims without webauthn)).

Usage: verify_grant.py CASES.json, where CASES.json is
  {"registry": <GET /v1/registry>, "now": <unix seconds>,
   "cases": [{"name", "grant", "action", "audience", "broker"}]}
Prints one JSON line per case: {"name", "ok", "error"?}. Exits 0 when it ran, whatever the
verdicts (the caller judges them), 2 when the input cannot be read.
"""

import base64
import hashlib
import json
import sys

import cbor2
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from webauthn import verify_authentication_response

RP_ID = "countersign.dev"
ORIGIN = "https://countersign.dev"
MAX_LIFETIME = 120
MAX_SKEW = 60


def b64url_decode(text):
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cose_key(jwk):
    """The COSE_Key (EC2, P-256, ES256) of a credential's JWK, as py_webauthn takes it."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("credential key is not EC P-256")
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: b64url_decode(jwk["x"]), -3: b64url_decode(jwk["y"])})


def verify(case, registry, now):
    parts = case["grant"].split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header = json.loads(b64url_decode(parts[0]))
    if header.get("typ") != "countersign-grant+jwt" or header.get("alg") != "EdDSA":
        raise ValueError("wrong typ or alg")
    approver, device_key = None, None
    for entry in registry["approvers"]:
        for key in entry["device_keys"]:
            if key["kid"] == header.get("kid"):
                approver, device_key = entry, key
    if device_key is None:
        raise ValueError("unknown kid")
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(device_key["x"]))
    try:
        public.verify(b64url_decode(parts[2]), (parts[0] + "." + parts[1]).encode())
    except InvalidSignature:
        raise ValueError("JWS signature does not verify") from None

    claims = json.loads(b64url_decode(parts[1]))
    if claims["iss"] != approver["id"] or claims["sub"] != approver["owner"]:
        raise ValueError("issuer or subject is not the key's approver")
    if claims["aud"] != case["audience"]:
        raise ValueError("wrong audience")
    if claims["broker"] != case["broker"]:
        raise ValueError("another broker's grant")
    if not claims["iat"] <= claims["nbf"] < claims["exp"] or claims["exp"] - claims["iat"] > MAX_LIFETIME:
        raise ValueError("bad lifetime")
    if now < claims["nbf"] - MAX_SKEW or now >= claims["exp"] + MAX_SKEW:
        raise ValueError("not valid now")
    action = case["action"]
    action_hash = b64url(hashlib.sha256(rfc8785.dumps(action)).digest())
    if action_hash != claims["action_hash"]:
        raise ValueError("the action is not the one approved")
    if action["subject"]["id"] != claims["sub"]:
        raise ValueError("the action is for someone else")

    assertion = claims.pop("webauthn")
    challenge = hashlib.sha256(rfc8785.dumps(claims)).digest()
    credentials = {c["id"]: c for c in approver["credentials"]}
    if assertion["id"] not in credentials:
        raise ValueError("unknown credential")
    verify_authentication_response(
        credential={
            "id": assertion["id"],
            "rawId": assertion["id"],
            "type": "public-key",
            "response": {
                "authenticatorData": assertion["authenticatorData"],
                "clientDataJSON": assertion["clientDataJSON"],
                "signature": assertion["signature"],
            },
            "clientExtensionResults": {},
        },
        expected_challenge=challenge,
        expected_rp_id=RP_ID,
        expected_origin=ORIGIN,
        credential_public_key=cose_key(credentials[assertion["id"]]["public_key"]),
        credential_current_sign_count=0,
        require_user_verification=True,
    )


def main():
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            data = json.load(f)
    except (IndexError, OSError, ValueError) as e:
        print(f"usage: verify_grant.py CASES.json ({e})", file=sys.stderr)
        return 2
    for case in data["cases"]:
        try:
            verify(case, data["registry"], data["now"])
            print(json.dumps({"name": case["name"], "ok": True}))
        except Exception as e:  # noqa: BLE001 — every refusal is reported, not raised
            print(json.dumps({"name": case["name"], "ok": False, "error": f"{type(e).__name__}: {e}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
