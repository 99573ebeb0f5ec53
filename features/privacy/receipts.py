"""The person reference and the signed receipt of an erasure (issue #13).

* The **person reference** is a keyed pseudonym: HMAC-SHA-256 of the person's canonical key
  under a workspace secret (``<home>/secrets/pseudonym_key``, 32 random bytes, mode 0600). It
  names the person in a receipt and in the proof of erasure without the raw id, and cannot be
  recomputed without the secret.
* A **receipt** is JSON: ``{"receipt": {...}, "public_key": ..., "signature": ...}``, where the
  signature is Ed25519 (``cryptography``) over the receipt's canonical JSON (sorted keys, no
  spaces). The signing key is ``<home>/secrets/receipt_signing_key.pem`` (PKCS#8, mode 0600),
  created on first use; its public half sits beside it (``receipt_signing_key.pub``) for
  :func:`verify_receipt`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from features.workspace import Workspace
from models.errors import TailorError

PSEUDONYM_KEY_FILE = "pseudonym_key"
SIGNING_KEY_FILE = "receipt_signing_key.pem"
PUBLIC_KEY_FILE = "receipt_signing_key.pub"
RECEIPT_KIND = "tailor.erasure_receipt"
RECEIPT_VERSION = 1


class ReceiptError(TailorError):
    """A receipt that does not verify: the reason, never a traceback."""


def _secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes of ``path``, created on first use with ``make()`` (mode 0600, in a 0700
    folder). Written to a private temporary file and linked into place: two processes racing
    both read the one key that won."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(make())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def pseudonym(ws: Workspace, key: str) -> str:
    """The keyed pseudonym of person key ``key`` in ``ws`` (``p1_`` and 32 hex digits)."""
    secret = _secret_file(
        ws.secrets_dir / PSEUDONYM_KEY_FILE, lambda: secrets.token_hex(32).encode()
    )
    digest = hmac.new(secret.strip(), key.encode("utf-8"), hashlib.sha256).hexdigest()
    return "p1_" + digest[:32]


def signing_key(ws: Workspace) -> Ed25519PrivateKey:
    """The workspace's receipt-signing key (created on first use, with its public half)."""

    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    key = serialization.load_pem_private_key(
        _secret_file(ws.secrets_dir / SIGNING_KEY_FILE, make), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ReceiptError(f"{ws.secrets_dir / SIGNING_KEY_FILE} is not an Ed25519 key")
    public = ws.secrets_dir / PUBLIC_KEY_FILE
    if not public.exists():
        public.write_bytes(_raw_public(key.public_key()))
    return key


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return base64.b64encode(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_receipt(ws: Workspace, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` signed with the workspace's key: the receipt document."""
    key = signing_key(ws)
    body = {"kind": RECEIPT_KIND, "version": RECEIPT_VERSION, **body}
    return {
        "receipt": body,
        "public_key": _raw_public(key.public_key()).decode(),
        "signature": base64.b64encode(key.sign(_canonical(body))).decode(),
    }


def verify_receipt(document: Any, ws: Workspace | None = None) -> dict[str, Any]:
    """The receipt's body when ``document`` is an intact receipt, else :class:`ReceiptError`
    saying why. With ``ws``, the signature must be the workspace's own key's (its public half
    in ``secrets``); without, the key embedded in the receipt is used (integrity only)."""
    if not isinstance(document, dict) or not {"receipt", "public_key", "signature"} <= set(
        document
    ):
        raise ReceiptError("not a receipt: needs 'receipt', 'public_key' and 'signature'")
    body = document["receipt"]
    if not isinstance(body, dict) or body.get("kind") != RECEIPT_KIND:
        raise ReceiptError(f"not a receipt: kind is not {RECEIPT_KIND!r}")
    embedded = str(document["public_key"]).encode()
    if ws is not None:
        path = ws.secrets_dir / PUBLIC_KEY_FILE
        if not path.exists():
            raise ReceiptError(f"no receipt key in {ws.secrets_dir}: this workspace signed none")
        if path.read_bytes().strip() != embedded:
            raise ReceiptError("signed by another key than this workspace's")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(embedded, validate=True))
        public.verify(base64.b64decode(str(document["signature"]), validate=True), _canonical(body))
    except (InvalidSignature, ValueError) as exc:
        raise ReceiptError("the signature does not match the receipt (altered or forged)") from exc
    return body
