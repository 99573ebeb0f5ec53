"""``DELETE /persons/{person_id}``: erase a person from every store (issue #13).

An admin action: it answers the signed erasure receipt of
:func:`features.privacy.erasure.erase_person`. ``?id_kind=anonymous`` says the id is an
anonymous (device) id; the default is a user id. An unknown person gets a receipt saying nothing
was held (200, never a 404: the answer must not tell whether Tailor knew them). The role check
(admin only) is the service's authentication middleware's (issue #13, keys and roles).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from features.identity.graph import IdentityError
from features.workspace import Workspace
from serving.error_bodies import error_json

logger = logging.getLogger(__name__)

PERSONS_PATH = "/persons/{person_id}"
ID_KINDS = ("user", "anonymous")


def erase_request(ws: Workspace, person_id: str, id_kind: str) -> tuple[int, dict]:
    """``(status, body)`` of one erasure request: 200 and the receipt (without its file path),
    or 400 naming the field at fault."""
    from features.privacy.erasure import erase_person
    from features.privacy.person import resolve

    if id_kind not in ID_KINDS:
        return 400, {"error": f"id_kind: {id_kind!r} is not one of {', '.join(ID_KINDS)}"}
    try:
        if id_kind == "user":
            person = resolve(ws, user_id=person_id)
        else:
            person = resolve(ws, anonymous_id=person_id)
    except IdentityError as exc:
        return 400, {"error": f"person_id: {str(exc).split(': ', 1)[-1]}"}
    # audit: the audit log's append plugs in here once keys and roles land (issue #13)
    receipt = erase_person(ws, person, audit=None)
    receipt.pop("path", None)
    return 200, receipt


def persons_app(current: Callable[[], Workspace | None]) -> Starlette:
    """The ASGI app of ``DELETE /persons/{person_id}``; ``current()`` gives the service's
    workspace, None until its constructor ran (503)."""
    import anyio.to_thread

    async def erase(request: Request) -> Response:
        ws = current()
        headers = {"cache-control": "no-store"}
        if ws is None:
            body = error_json("the service is starting; try again")
            return Response(body, 503, media_type="application/json", headers=headers)
        person_id = request.path_params["person_id"]
        id_kind = request.query_params.get("id_kind", "user")
        status, answer = await anyio.to_thread.run_sync(erase_request, ws, person_id, id_kind)
        payload = error_json(answer["error"]) if "error" in answer else json.dumps(answer).encode()
        return Response(payload, status, media_type="application/json", headers=headers)

    return Starlette(routes=[Route(PERSONS_PATH, erase, methods=["DELETE"], name="persons")])
