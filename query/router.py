"""HTTP only: parse parameters, call the service, answer."""

from fastapi import APIRouter

router = APIRouter(tags=["query"])
