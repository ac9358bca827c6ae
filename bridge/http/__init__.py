"""The HTTP server adapter (uvicorn) and what every route needs from it."""
