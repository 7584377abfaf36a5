"""What users write instead of Triton: FastAPI + onnxruntime serving the same MiniLM encoder.

    .venv/bin/python -m modelrepo.perf.fastapi_baseline --port 8100 [--sessions N --threads T]

POST /embed {"texts": ["...", ...]} -> {"embeddings": [[...384 floats...], ...]}: our tokenizer and
the same ONNX graph, one uvicorn worker, no batching across requests — the usual shape of a
hand-written model server — given the resources Triton's encoder has: by default as many onnxruntime
sessions as the served config's instances, each with its `intra_op_threads` (perf/embedding_sessions.py);
FastAPI's thread pool runs up to that many requests at once.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel

from modelrepo.perf.embedding_sessions import EmbedderPool, Parallelism, served_parallelism


class Texts(BaseModel):  # module level: FastAPI resolves the (postponed) annotation by name
    texts: list[str]


def create_app(parallelism: Parallelism) -> FastAPI:
    pool = EmbedderPool(parallelism)
    app = FastAPI()

    @app.post("/embed")
    def embed(body: Texts) -> dict:  # sync: FastAPI runs it in its thread pool
        with pool.borrow() as embedder:
            return {"embeddings": embedder.embed(body.texts, batch_size=len(body.texts)).tolist()}

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    served = served_parallelism()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--sessions", type=int, default=served.sessions, help="onnxruntime sessions (default: the served instances)")
    parser.add_argument("--threads", type=int, default=served.threads_per_session, help="intra-op threads per session")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(Parallelism(args.sessions, args.threads)), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
