"""What users write instead of Triton: FastAPI + onnxruntime serving the same MiniLM encoder.

    .venv/bin/python -m modelrepo.perf.fastapi_baseline --port 8100

POST /embed {"texts": ["...", ...]} -> {"embeddings": [[...384 floats...], ...]}: our tokenizer and
the same ONNX graph, one onnxruntime session using every core, one uvicorn worker, no batching
across requests — the usual shape of a hand-written model server.
"""

from __future__ import annotations

import argparse
import os

from fastapi import FastAPI
from pydantic import BaseModel

from modelrepo.build.embedding import ServingEmbedder
from modelrepo.paths import MODEL_REPOSITORY


class Texts(BaseModel):  # module level: FastAPI resolves the (postponed) annotation by name
    texts: list[str]


def create_app(threads: int = os.cpu_count() or 1) -> FastAPI:
    embedder = ServingEmbedder(
        MODEL_REPOSITORY / "minilm_tokenizer" / "1" / "tokenizer",
        MODEL_REPOSITORY / "minilm_encoder" / "1" / "model.onnx",
        threads=threads,
    )
    app = FastAPI()

    @app.post("/embed")
    def embed(body: Texts) -> dict:  # sync: FastAPI runs it in its thread pool
        return {"embeddings": embedder.embed(body.texts, batch_size=len(body.texts)).tolist()}

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
