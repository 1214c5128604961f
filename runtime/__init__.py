"""The endpointctl runtime: an OpenAI- and TGI-compatible generation server with continuous batching.

Layout: ``openai/`` and ``tgi/`` hold the protocol layers, ``guidance/`` grammars and tool calls, ``engine/`` the
validation, scheduler, model and sampling (the only package that imports torch), ``app.py`` the ASGI app and
``launch.py`` what ``python -m runtime`` runs; ``tinymodel.py`` builds the local test model, ``realmodels.py`` real
models from pinned packages (``endpointctl dev model``). ``README.md`` walks through all of it.
"""

__version__ = "0.1.0"
