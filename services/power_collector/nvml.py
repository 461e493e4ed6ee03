"""NVIDIA GPUs through NVML (``nvidia-ml-py``, the optional extra ``joulestream[nvidia]``).

Per GPU: the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the
driver loaded; Volta and later) where the GPU has it, else the board power
(``nvmlDeviceGetPowerUsage``, mW) integrated over time; NVENC utilisation
(``nvmlDeviceGetEncoderUtilization``, percent) when the GPU reports it.  No library, no
driver or no GPU: the source is not offered (``SourceUnavailable`` with the reason).

The NVML module is an argument so tests can pass an object mimicking pynvml
(tests/fakes/nvml.py); by default ``import pynvml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.power_samples import Zone

from .logic import PowerIntegrator, ResettableCounter
from .sources import Reading, SourceUnavailable


@dataclass
class _Gpu:
    zone: str
    handle: Any
    has_counter: bool
    has_encoder: bool
    counter: ResettableCounter = field(default_factory=ResettableCounter)
    integrator: PowerIntegrator = field(default_factory=PowerIntegrator)
    last_j: float | None = None


def _load_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as e:
        raise SourceUnavailable(
            "the NVML source needs nvidia-ml-py: pip install 'joulestream[nvidia]'") from e
    return pynvml


class NvmlSource:
    """Every NVIDIA GPU of the host, one zone ``gpu-<index>`` each (kind gpu, measured)."""

    name = "nvml"

    def __init__(self, nvml: Any | None = None) -> None:
        self.nv = nvml if nvml is not None else _load_pynvml()
        nv = self.nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            raise SourceUnavailable(f"NVML not usable ({e}): no NVIDIA driver or GPU") from e
        self._gpus: list[_Gpu] = []
        self._last_mono: int | None = None
        try:
            count = nv.nvmlDeviceGetCount()
            for i in range(count):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                gpu = self._probe(i, h)
                if gpu is not None:
                    self._gpus.append(gpu)
        except nv.NVMLError as e:
            self._shutdown()
            raise SourceUnavailable(f"NVML failed while listing GPUs: {e}") from e
        if not self._gpus:
            self._shutdown()
            raise SourceUnavailable(
                "NVML found no GPU that reports energy or power" if count else "NVML: no GPU")

    def _supported(self, fn: Any, handle: Any) -> bool:
        nv = self.nv
        try:
            fn(handle)
        except nv.NVMLError as e:
            if e.value in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_NO_PERMISSION,
                           nv.NVML_ERROR_FUNCTION_NOT_FOUND):
                return False
            raise
        return True

    def _probe(self, index: int, handle: Any) -> _Gpu | None:
        nv = self.nv
        has_counter = self._supported(nv.nvmlDeviceGetTotalEnergyConsumption, handle)
        has_power = has_counter or self._supported(nv.nvmlDeviceGetPowerUsage, handle)
        if not has_power:
            return None
        has_enc = self._supported(nv.nvmlDeviceGetEncoderUtilization, handle)
        return _Gpu(f"gpu-{index}", handle, has_counter, has_enc)

    def describe(self) -> list[str]:
        """One line per GPU: which NVML reading gives its energy."""
        return [f"{g.zone}: {'energy counter' if g.has_counter else 'power integrated'}"
                f"{', encoder utilisation' if g.has_encoder else ''}" for g in self._gpus]

    def zones(self) -> list[Zone]:
        return [Zone(name=g.zone, kind="gpu", source="nvml", basis="measured",
                     scope="component", in_total=True) for g in self._gpus]

    def read(self, mono_ns: int) -> Reading:
        nv = self.nv
        energy: dict[str, float] = {}
        power: dict[str, float] = {}
        enc: dict[str, float] = {}
        last = self._last_mono
        dt = (mono_ns - last) / 1e9 if last is not None and mono_ns > last else None
        for g in self._gpus:
            # NVMLError here propagates as an OSError-like failure of this sample
            try:
                if g.has_counter:
                    j = g.counter.update(nv.nvmlDeviceGetTotalEnergyConsumption(g.handle) / 1e3)
                else:
                    j = g.integrator.update(nv.nvmlDeviceGetPowerUsage(g.handle) / 1e3, mono_ns)
                if g.has_encoder:
                    util, _period_us = nv.nvmlDeviceGetEncoderUtilization(g.handle)
                    enc[g.zone] = float(util)
            except nv.NVMLError as e:
                raise OSError(f"NVML read of {g.zone} failed: {e}") from e
            energy[g.zone] = j
            if dt and g.last_j is not None:
                power[g.zone] = max(0.0, (j - g.last_j) / dt)
            g.last_j = j
        self._last_mono = mono_ns
        return Reading(energy, power, encoder_util_pct=enc)

    def _shutdown(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass

    def close(self) -> None:
        self._shutdown()
