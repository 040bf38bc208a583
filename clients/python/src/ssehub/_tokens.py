"""Minting the JWTs the hub verifies (``--jwt-secret`` / ``--jwt-public-key``).

Claims: ``{"sub": ..., "iat": ..., "exp": ..., "ssehub": {"subscribe": [...],
"publish": [...]}}``, plus ``aud``/``iss`` when the hub checks them. Every
grant is checked as the hub parses it, so a token is never minted that the
hub would refuse as malformed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt

from ._rules import Pattern

Key = str | bytes


def topic_list(topics: str | Iterable[str]) -> list[str]:
    """One topic, or several, as a list (a bare string is one topic, not its letters)."""
    return [topics] if isinstance(topics, str) else list(topics)


def _algorithm_of(private_key: Key) -> str:
    """The JWS algorithm a PEM private key signs with (RSA: RS256; P-256:
    ES256; P-384: ES384; Ed25519: EdDSA)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("signing with a private key needs `pip install ssehub[crypto]`") from e
    pem = private_key.encode() if isinstance(private_key, str) else private_key
    key = load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return "ES256" if key.curve.name == "secp256r1" else "ES384"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError("unsupported private key: give jwt_algorithm")


class TokenSigner:
    """Signs tokens with an HMAC secret (HS256) or a PEM private key."""

    def __init__(
        self,
        *,
        secret: Key | None = None,
        private_key: Key | None = None,
        algorithm: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if (secret is None) == (private_key is None):
            raise ValueError("give exactly one of jwt_secret and jwt_private_key")
        self._key: Key = secret if secret is not None else private_key  # type: ignore[assignment]
        if algorithm is None:
            algorithm = "HS256" if secret is not None else _algorithm_of(self._key)
        self.algorithm = algorithm
        self.audience = audience
        self.issuer = issuer

    def mint(
        self,
        *,
        subscribe: Iterable[str] = (),
        publish: Iterable[str] = (),
        subject: str | None = None,
        expires_in: int = 3600,
    ) -> tuple[str, int]:
        """The token and its ``exp`` (Unix seconds)."""
        grants: dict[str, list[str]] = {}
        for name, patterns in (("subscribe", list(subscribe)), ("publish", list(publish))):
            for pattern in patterns:
                Pattern(pattern)  # raises ValueError, as the hub would refuse the token
            if patterns:
                grants[name] = patterns
        if subject is not None and not isinstance(subject, str):
            raise TypeError("subject must be a string (the hub reads sub as one)")
        now = int(time.time())
        expires = now + int(expires_in)
        claims: dict[str, object] = {"iat": now, "exp": expires, "ssehub": grants}
        if subject is not None:
            claims["sub"] = subject
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self._key, algorithm=self.algorithm), expires
