"""TensorRT plans from ONNX with the builder API of the TensorRT in the pinned NGC image (10.5).

- QDQ (INT8) and FP32 graphs build as **strongly typed** networks: precisions come from the graph,
  no implicit calibrator (deprecated in 10.1, removed in 11). FP16 builds a weakly typed network with
  the FP16 builder flag (still supported in 10.x).
- One optimisation profile whose min/opt/max batch cover the config's max_batch_size and every
  preferred_batch_size (see targets.engine_profile), a workspace limit, and a timing cache persisted
  between builds. The plan is written with `engine.json`: TensorRT version, GPU, compute capability,
  profile — `modelrepo check` reads it to catch batch sizes outside the profile.

The same code runs against `tensorrt_rtx` (TensorRT for RTX), which builds without a GPU: the tests use
it to prove every ONNX we ship parses and builds in TensorRT's ONNX parser. Those are RTX engines,
not datacenter ones: the check is the parser and builder, not the plan Triton would load.
"""

from __future__ import annotations

import ctypes
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from modelrepo.build.targets import ENGINE_METADATA, EngineProfile
from modelrepo.pins import pins

WORKSPACE_BYTES = 2 << 30


class TensorRTUnavailable(RuntimeError):
    """No GPU or no (matching) TensorRT: the message is one sentence saying what is missing."""


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str


def visible_gpu() -> Gpu | None:
    """The first CUDA device through the driver API (libcuda), or None: no torch or cuda-python needed."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    device = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return Gpu(name.value.decode(), f"{major.value}.{minor.value}")


def require_tensorrt() -> tuple[ModuleType, Gpu]:
    """The `tensorrt` module and the GPU, or TensorRTUnavailable naming everything that is missing."""
    wanted = pins().tensorrt
    gpu = visible_gpu()
    missing = []
    if gpu is None:
        missing.append("no NVIDIA GPU is visible (no CUDA driver or device)")
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
        missing.append(f"TensorRT {wanted} is not installed (Python module `tensorrt`)")
    if tensorrt is not None and not tensorrt.__version__.startswith(wanted):
        missing.append(
            f"TensorRT {tensorrt.__version__} is installed but {pins().ngc_triton_image} loads plans from {wanted} only"
        )
    if missing:
        raise TensorRTUnavailable(
            "cannot build a TensorRT plan here: " + " and ".join(missing)
            + f"; run this on a GPU host in nvcr.io/nvidia/tensorrt:{pins().ngc_release}-py3 (TensorRT {wanted})."
        )
    return tensorrt, gpu


def build_plan(
    trt: ModuleType,
    onnx_path: Path,
    plan_path: Path | None,
    profile: EngineProfile,
    fp16: bool = False,
    timing_cache_path: Path | None = None,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> dict:
    """Parse `onnx_path`, build a serialized engine for `profile`; write it if `plan_path`; return metadata.

    `trt` is the `tensorrt` module (datacenter plans) or `tensorrt_rtx` (the CPU parser/builder check).
    """
    started = time.monotonic()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    strongly_typed = not fp16
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise RuntimeError(f"{trt.__name__} {trt.__version__} has no FP16 builder flag (strongly typed only)")
        config.set_flag(trt.BuilderFlag.FP16)
    optimisation = builder.create_optimization_profile()
    shapes = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shapes[tensor.name] = profile.shapes(tuple(tensor.shape))
        optimisation.set_shape(tensor.name, *shapes[tensor.name])
    config.add_optimization_profile(optimisation)

    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path and timing_cache_path.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the log above)")
    if timing_cache_path:
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        timing_cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    if plan_path:
        plan_path.write_bytes(memoryview(plan))
    return {
        "tensorrt_module": trt.__name__,
        "tensorrt_version": trt.__version__,
        "strongly_typed": strongly_typed,
        "fp16_flag": fp16,
        "workspace_bytes": workspace_bytes,
        "profile": profile.as_dict(),
        "input_shapes_min_opt_max": {name: [list(s) for s in value] for name, value in shapes.items()},
        "inputs": [_io(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [_io(network.get_output(i)) for i in range(network.num_outputs)],
        "layers": network.num_layers,
        "plan_bytes": plan.nbytes,
        "build_seconds": round(time.monotonic() - started, 2),
    }


def _io(tensor) -> dict:
    return {"name": tensor.name, "dtype": str(tensor.dtype).split(".")[-1], "shape": list(tensor.shape)}


def build_datacenter_plan(onnx_path: Path, version_dir: Path, profile: EngineProfile, fp16: bool, timing_cache: Path) -> dict:
    """The real thing: a plan for the pinned server, with metadata, into the model's version folder."""
    trt, gpu = require_tensorrt()
    from modelrepo.build.targets import PLAN_FILENAME

    metadata = build_plan(trt, onnx_path, version_dir / PLAN_FILENAME, profile, fp16, timing_cache)
    metadata.update(gpu=gpu.name, compute_capability=gpu.compute_capability, source_onnx=onnx_path.name)
    write_engine_metadata(version_dir, metadata)
    return metadata


def write_engine_metadata(version_dir: Path, metadata: dict) -> None:
    (version_dir / ENGINE_METADATA).write_text(json.dumps(metadata, indent=2))


def read_engine_metadata(version_dir: Path) -> dict | None:
    path = version_dir / ENGINE_METADATA
    return json.loads(path.read_text()) if path.exists() else None
