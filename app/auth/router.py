"""Login for the browser: the token is exchanged once for an HttpOnly, SameSite=Strict
session cookie that every later request (fetch, SSE, CSV downloads) carries. Scripts
send `Authorization: Bearer <token>` instead and never need these."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.auth.schemas import Login, SessionState
from app.auth.service import SESSION_COOKIE, make_session, session_valid, token_matches
from app.deps import SettingsDep
from app.errors import AppError

router = APIRouter(tags=["auth"])


@router.get("/session", response_model=SessionState)
def session_state(request: Request, settings: SettingsDep) -> SessionState:
    """Whether a token is needed, and whether this request's cookie is a valid session."""
    if settings.token is None:
        return SessionState(token_required=False, authenticated=True)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return SessionState(token_required=True, authenticated=session_valid(cookie, settings.token))


@router.post("/session", response_model=SessionState, responses={401: {}})
def login(body: Login, request: Request, response: Response, settings: SettingsDep) -> SessionState:
    """Exchange the token for a session cookie (HttpOnly, SameSite=Strict)."""
    if settings.token is None:
        return SessionState(token_required=False, authenticated=True)
    if not token_matches(body.token.encode("utf-8"), settings.token):
        raise AppError(401, "wrong token")
    response.set_cookie(
        SESSION_COOKIE,
        make_session(settings.token, settings.session_hours * 3600),
        max_age=int(settings.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return SessionState(token_required=True, authenticated=True)


@router.delete("/session", status_code=204)
def logout() -> Response:
    """End this browser's session."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
