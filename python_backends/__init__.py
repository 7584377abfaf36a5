"""Plain-Python logic behind the repository's Python-backend models (imported as
modelrepo.python_backends). Nothing here needs a running server; `triton_adapter` is the one module
that talks to `triton_python_backend_utils`."""
