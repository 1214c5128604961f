"""``python -m runtime``: serve MODEL_ID over HTTP (TGI-style env vars or the matching flags)."""

from runtime.launch import main

raise SystemExit(main())
