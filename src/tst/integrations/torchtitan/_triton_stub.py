"""Importing TorchTitan 0.3.0 on a CPU-only PyTorch, which ships no ``triton``: the one workaround.

TorchTitan 0.3.0 imports ``triton`` unconditionally in one kernels module. When triton is missing, that
module alone is imported against a placeholder whose kernels raise when launched; the placeholder is
removed from ``sys.modules`` right after, so nothing else sees it. With triton installed (every CUDA
build) :func:`import_torchtitan` is a plain import.
"""
import importlib
import importlib.util
import logging
import sys
import types

logger = logging.getLogger(__name__)

#: The TorchTitan release this integration was written against (its extension points change between releases).
SUPPORTED_TORCHTITAN = "0.3.0"


def import_torchtitan():
    """Import ``torchtitan.trainer`` and the Llama3 model and return the ``torchtitan`` package.

    TorchTitan 0.3.0 imports ``triton`` unconditionally (``torchtitan/distributed/minimal_async_ep/kernels.py``,
    reached from ``torchtitan.models.common`` → ``decoder`` → ``moe`` → ``token_dispatcher``), and CPU builds
    of PyTorch ship no triton. When triton is missing, that one kernels module is imported against a
    placeholder whose kernels raise when launched; the placeholder is removed from ``sys.modules`` right
    after, and ``torch``'s own triton probes are resolved (to "absent") before it exists, so nothing else
    sees it. With triton installed (every CUDA build), this is a plain import.
    """
    if "torchtitan.trainer" not in sys.modules:
        try:
            tt_spec = importlib.util.find_spec("torchtitan")
        except ValueError:  # pragma: no cover - broken installs
            tt_spec = None
        if tt_spec is None:
            raise ImportError("tst.integrations.torchtitan needs torchtitan: pip install torchtitan==0.3.0")
        if importlib.util.find_spec("triton") is None:
            _import_minimal_async_ep_without_triton()
        importlib.import_module("torchtitan.trainer")
        importlib.import_module("torchtitan.models.llama3")
    tt = sys.modules["torchtitan"]
    version = getattr(tt, "__version__", "")
    if not str(version).startswith(SUPPORTED_TORCHTITAN):
        logger.warning("tst.integrations.torchtitan targets torchtitan %s, found %s", SUPPORTED_TORCHTITAN, version)
    return tt


class _TritonPlaceholder:
    """Stands for any ``triton.language`` attribute at import time (dtypes, ``constexpr``, ``pointer_type(...)``)."""

    def __call__(self, *args, **kwargs):
        return _TritonPlaceholder()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _TritonPlaceholder()


def _unavailable_kernel(fn):
    def launch(*args, **kwargs):
        raise RuntimeError(f"triton kernel {fn.__name__} needs triton, which is not installed (CPU PyTorch)")

    class _Kernel:
        __name__ = getattr(fn, "__name__", "kernel")

        def __getitem__(self, grid):
            return launch

        __call__ = staticmethod(launch)

    return _Kernel()


def _import_minimal_async_ep_without_triton() -> None:
    import torch.utils._triton as torch_triton

    torch_triton.has_triton_package()  # cache "no triton" before the placeholder exists
    importlib.import_module("torch._inductor.runtime.triton_compat")
    importlib.import_module("torch.distributed._symmetric_memory")
    importlib.import_module("torchtitan.distributed")  # everything up to the kernels module, without placeholder

    def jit(fn=None, **kwargs):
        return _unavailable_kernel(fn) if fn is not None else _unavailable_kernel

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _TritonPlaceholder()

    triton = types.ModuleType("triton")
    triton.jit = jit
    triton.cdiv = lambda a, b: -(-a // b)
    triton.next_power_of_2 = lambda n: 1 << (int(n) - 1).bit_length()
    language = types.ModuleType("triton.language")
    language.__getattr__ = module_getattr
    triton.language = language
    sys.modules["triton"], sys.modules["triton.language"] = triton, language
    try:
        importlib.import_module("torchtitan.distributed.minimal_async_ep")
    finally:
        for name in ("triton", "triton.language"):
            if sys.modules.get(name) in (triton, language):
                del sys.modules[name]
