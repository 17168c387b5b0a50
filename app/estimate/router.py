"""POST /api/estimate: a config's memory budget, before it is launched."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ReadSession, SettingsDep
from app.estimate import service
from app.estimate.schemas import EstimateOut, EstimateRequest
from app.runs.service import validate_train_config

router = APIRouter(tags=["estimate"])


@router.post("/estimate", response_model=EstimateOut)
def estimate(body: EstimateRequest, session: ReadSession, settings: SettingsDep) -> EstimateOut:
    """Weights, gradients, optimizer state, activations and their total, in bytes, and
    whether they fit the device the run would train on. Writes nothing."""
    config = validate_train_config(session, body.preset, body.config)
    return service.estimate(config, settings)
