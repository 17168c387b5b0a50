"""Request and response shapes of the login endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=1000, description="the server's TRAINLENS_TOKEN")


class SessionState(BaseModel):
    token_required: bool = Field(description="whether this server has a token configured")
    authenticated: bool = Field(description="whether this request may use the API")
