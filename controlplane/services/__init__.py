"""The control plane's logic, between the HTTP routes and the database (no FastAPI imports here)."""
