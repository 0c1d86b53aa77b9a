"""One module per OAuth / SMART endpoint; each exposes `router(settings) -> APIRouter`."""
