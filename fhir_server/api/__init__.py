"""HTTP: thin FastAPI routers per interaction family; parsing and negotiation helpers."""
