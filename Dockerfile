# syntax=docker/dockerfile:1
# The modelrepo serving image: Triton 2.51.0 (NGC 24.10, the release the embedded server is) serving
# this repository with the flags `modelrepo serve` uses (modelrepo/triton/flags.py, via launch.py).
#
#   docker build --build-arg VARIANT=cpu -t modelrepo:0.1.0-cpu .
#   docker run --rm -p 8000-8002:8000-8002 -p 9000:9000 -e MODELREPO_ADMIN_KEY=$(openssl rand -hex 16) --shm-size=1g modelrepo:0.1.0-cpu
#
# VARIANT: cpu (the repository as `make build` makes it) | onnxruntime | tensorrt (text_embedding's
# encoder on that engine; tensorrt is an INT8 plan built for the builder's GPU) | llm (llm_engine on
# TensorRT-LLM, on the TensorRT-LLM image). tensorrt and llm build engines, which needs a GPU in the
# build (a BuildKit builder with the NVIDIA CDI device); without one the step stops with one sentence.
#
# Every image below is pinned in pyproject.toml [tool.modelrepo.pins]; tests/deploy/test_dockerfile.py
# asserts these defaults equal the pins.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
ARG TRTLLM_IMAGE=nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
ARG VARIANT=cpu

# ---- build: artifacts (ONNX exports, tokenizers, weights) and engines, on the TensorRT image ----
# checkov reads the ARG name, not its pinned default above, as the tag:
#checkov:skip=CKV_DOCKER_7:every base image is an ARG whose default is a pinned NGC tag (tested equal to the pins)
FROM ${TENSORRT_IMAGE} AS build
ARG VARIANT
ARG TENSORRT_VERSION=10.5.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# modelrepo needs Python 3.11 (Ubuntu 22.04's python3.11; the image's own python3 is 3.10).
# DL3008 (apt versions) ignored here and below: the pinned NGC base fixes the Ubuntu release, whose
# security updates we want; exact Debian versions would break the build when jammy-updates moves.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml Makefile README.md ./
COPY modelrepo modelrepo
COPY build build
COPY perf perf
COPY python_backends python_backends
COPY model_repository model_repository
RUN make build PYTHON=python3.11 EXTRAS= \
    && .venv/bin/pip install --no-cache-dir "tensorrt-cu12==${TENSORRT_VERSION}"
# The project's own wheel, its `serving` and `gateway` extras (read from the wheel) and the build venv's versions.
RUN mkdir -p /out/wheels /out/requirements \
    && .venv/bin/pip wheel --no-deps --wheel-dir /out/wheels . \
    && .venv/bin/python -m modelrepo.serving_requirements /out/wheels/modelrepo-*.whl > /out/requirements/serving.txt \
    && .venv/bin/python -m modelrepo.serving_requirements --extra gateway /out/wheels/modelrepo-*.whl > /out/requirements/gateway.txt \
    && .venv/bin/pip freeze --exclude-editable > /out/requirements/constraints.txt
# The variant's repository; a+rX: the runtime user (uid 1000) reads every artifact (safetensors writes 0600).
RUN case "${VARIANT}" in \
         cpu) cp -r model_repository /out/model_repository ;; \
         onnxruntime) .venv/bin/modelrepo build minilm_encoder --target onnxruntime --output /out/model_repository ;; \
         tensorrt) .venv/bin/modelrepo build minilm_encoder --target tensorrt --precision int8 --output /out/model_repository ;; \
         llm) .venv/bin/modelrepo build llm --target tensorrt-llm --config-only --output /out/model_repository ;; \
         *) echo "VARIANT must be cpu, onnxruntime, tensorrt or llm (got '${VARIANT}')" >&2; exit 2 ;; \
       esac \
    && find /out/model_repository -name __pycache__ -prune -exec rm -rf {} + \
    && find /out/model_repository -name .build-stamp.json -delete \
    && chmod -R a+rX /out/model_repository

# ---- the Python-backend stub for Python 3.11 ----
# The NGC stub embeds Python 3.10; our pins (scipy 1.17, onnxruntime 1.32, transformers 5) need
# 3.11, as the embedded server's stub does. Triton's documented answer: build the stub from
# python_backend at the same release tag against the Python you serve with.
FROM ${TRITON_IMAGE} AS stub
ARG TRITON_REPO_TAG=r24.10
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git cmake build-essential rapidjson-dev libarchive-dev zlib1g-dev python3.11-dev \
    && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch "${TRITON_REPO_TAG}" https://github.com/triton-inference-server/python_backend /src/python_backend
WORKDIR /src/python_backend/build
RUN cmake -DTRITON_ENABLE_GPU=ON -DTRITON_BACKEND_REPO_TAG="${TRITON_REPO_TAG}" -DTRITON_COMMON_REPO_TAG="${TRITON_REPO_TAG}" \
          -DTRITON_CORE_REPO_TAG="${TRITON_REPO_TAG}" -DPYBIND11_PYTHON_VERSION=3.11 -DPython_EXECUTABLE=/usr/bin/python3.11 .. \
    && make -j"$(nproc)" triton-python-backend-stub

# ---- the served repository per variant ----
FROM build AS repository-cpu
FROM build AS repository-onnxruntime
FROM build AS repository-tensorrt
# TensorRT-LLM 0.14 runs on the image's Python 3.10: tensorrt_llm_engine.py imports nothing of ours.
FROM ${TRTLLM_IMAGE} AS repository-llm
ARG TENSORRT_LLM_VERSION=0.14.0
COPY --from=build /out /out
COPY --from=build /src/model_repository/llm_engine/1/model /tmp/smollm2
COPY build/tensorrt_llm_engine.py /tmp/tensorrt_llm_engine.py
RUN python3 /tmp/tensorrt_llm_engine.py /tmp/smollm2 /out/model_repository/llm_engine/1/engine --expect-version "${TENSORRT_LLM_VERSION}" \
    && rm -rf /tmp/smollm2
# DL3006 (untagged image) ignored: repository-${VARIANT} is one of the stages above, not a registry image.
# hadolint ignore=DL3006
FROM repository-${VARIANT} AS repository

# ---- runtime ----
FROM ${TRITON_IMAGE} AS base-cpu
FROM ${TRITON_IMAGE} AS base-onnxruntime
FROM ${TRITON_IMAGE} AS base-tensorrt
FROM ${TRTLLM_IMAGE} AS base-llm
# DL3006 ignored: base-${VARIANT} is one of the four stages just above.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=stub /src/python_backend/build/triton_python_backend_stub /opt/tritonserver/backends/python/triton_python_backend_stub
COPY --from=build /out/wheels /opt/modelrepo/wheels
COPY --from=build /out/requirements /opt/modelrepo/requirements
# The project's wheel (no hand-picked modules: the image imports what the tests import) and exactly its
# `serving` extra (the models) and `gateway` extra (the OpenAI gateway), every transitive version as in
# the build venv (tests/deploy/test_container_rehearsal.py runs this stage on the host).
RUN python3.11 -m venv /opt/modelrepo/venv \
    && /opt/modelrepo/venv/bin/pip install --no-cache-dir --no-deps /opt/modelrepo/wheels/modelrepo-*.whl \
    && /opt/modelrepo/venv/bin/pip install --no-cache-dir \
         -r /opt/modelrepo/requirements/serving.txt -r /opt/modelrepo/requirements/gateway.txt \
         -c /opt/modelrepo/requirements/constraints.txt
# The stub takes python3 (stdlib + site-packages) from PATH: the venv's 3.11, as `modelrepo serve` does.
# Caches, logs and keys go under HOME (modelrepo.paths.cache_dir), never under the install.
ENV PATH=/opt/modelrepo/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/modelrepo \
    MODELREPO_VARIANT=${VARIANT}
COPY --from=repository /out/model_repository /models
# uid 1000, no login shell; HOME and /tmp are the only places it writes (k8s mounts emptyDirs there).
RUN (id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin modelrepo) \
    && mkdir -p /home/modelrepo && chown 1000:1000 /home/modelrepo
USER 1000
WORKDIR /home/modelrepo
# Triton's HTTP, gRPC and metrics ports; the OpenAI gateway's (MODELREPO_OPENAI_PORT; off: none).
EXPOSE 8000 8001 8002 9000
# Healthy = every model loaded (--strict-readiness) and the gateway's /health answering 200 (unless
# MODELREPO_OPENAI_PORT=off); model loading takes minutes, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-m", "modelrepo.triton.launch", "--health"]
# Requires MODELREPO_ADMIN_KEY (the restricted model-control APIs); see modelrepo/triton/launch.py.
ENTRYPOINT ["python3", "-m", "modelrepo.triton.launch"]
