"""The endpointctl runtime: an OpenAI- and TGI-compatible generation server with continuous batching.

Layout: ``openai/`` and ``tgi/`` hold the protocol layers, ``engine/`` the validation, scheduler, model and
sampling (the only package that imports torch), ``server.py`` the app and launcher, ``tinymodel.py`` the local
test model builder, ``realmodels.py`` the builder of real models from pinned packages (``endpointctl dev model``).
"""

__version__ = "0.1.0"
