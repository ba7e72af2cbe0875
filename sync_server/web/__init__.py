"""The server's HTTP side (FastAPI): resident pages and API, worker app, admin pages."""
