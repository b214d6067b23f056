"""Where to run, and in which precision."""

from __future__ import annotations

import torch

from .errors import ParamsError


def pick_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"train.device is {spec!r} but no CUDA device is visible; use auto or cpu")
    return torch.device(spec)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; fp32 on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def prepare_batch(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a uint8 batch to the device, in channels_last (see `channels_last`)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """The memory format for EfficientNet's depthwise convolutions on every device: bf16 on CUDA
    falls back to slow kernels without it, and on the CPU it is 1.4-1.5x faster too (measured on
    2 cores: B3 trains at 80 instead of 55 img/s at 64 px; batch-1 inference at 300 px takes 65
    instead of 93 ms)."""
    return model.to(memory_format=torch.channels_last)


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile in place (the state_dict keys stay those of the plain model), with Inductor
    compiling in this process. By default it starts a pool of compile workers (a sidecar process
    and one worker per core) that lives until the interpreter exits, and whose shutdown at exit
    waits up to 300 s for the sidecar: on an H100 (torch 2.11, 16 cores) the benchmark printed its
    figures and then did not exit within its 170 s limit. One compile thread means no pool, so
    nothing outlives training; the price is that kernels compile one after another (a slower first
    epoch). On the CPU Inductor compiles in this process anyway."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1
    model.compile()
    return model
