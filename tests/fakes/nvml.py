"""A stand-in for the ``pynvml`` module (nvidia-ml-py) with the calls power_collector makes.

It mimics the real module's interface: the same function names and return types (energy
in mJ, power in mW, ``[utilisation %, sampling period µs]`` for the encoder), the same error
type ``NVMLError`` carrying ``.value`` with the real ``NVML_ERROR_*`` codes, and the same
failure modes: ``nvmlInit`` raises ``NVML_ERROR_LIBRARY_NOT_FOUND`` without a driver, an
unsupported query raises ``NVML_ERROR_NOT_SUPPORTED``, calls before ``nvmlInit`` raise
``NVML_ERROR_UNINITIALIZED``.
"""

from __future__ import annotations

from dataclasses import dataclass

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15

_TEXT = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """As pynvml.NVMLError: the NVML return code is in ``.value``."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _TEXT.get(self.value, "Unknown Error")


@dataclass
class FakeGpu:
    name: str = "NVIDIA L4"
    #: Volta+ has the total-energy counter; older GPUs only report power
    has_energy_counter: bool = True
    has_power: bool = True
    has_encoder: bool = True
    power_mw: int = 30_000
    energy_mj: int = 1_000_000  # since the driver loaded, not zero at start
    encoder_util: int = 0
    lost: bool = False

    def spend(self, joules: float, power_w: float | None = None) -> None:
        """The GPU used ``joules``; its instantaneous power is now ``power_w``."""
        self.energy_mj += round(joules * 1000)
        if power_w is not None:
            self.power_mw = round(power_w * 1000)


class FakeNvml:
    """Pass an instance where the code expects the ``pynvml`` module."""

    NVMLError = NVMLError
    NVML_ERROR_UNINITIALIZED = NVML_ERROR_UNINITIALIZED
    NVML_ERROR_INVALID_ARGUMENT = NVML_ERROR_INVALID_ARGUMENT
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_FUNCTION_NOT_FOUND = NVML_ERROR_FUNCTION_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST

    def __init__(self, gpus: list[FakeGpu] | None = None, driver: bool = True) -> None:
        self.gpus = gpus if gpus is not None else []
        self.driver = driver
        self.initialised = 0
        self.calls: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------
    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised -= 1

    def _check(self) -> None:
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: object) -> FakeGpu:
        self._check()
        if not isinstance(handle, FakeGpu) or handle not in self.gpus:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return handle

    # -- queries -----------------------------------------------------------------------
    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: object) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        """mJ since the driver was last loaded (Volta and later)."""
        g = self._gpu(handle)
        self.calls.append("energy")
        if not g.has_energy_counter:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        """mW, board power."""
        g = self._gpu(handle)
        self.calls.append("power")
        if not g.has_power:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return g.power_mw

    def nvmlDeviceGetEncoderUtilization(self, handle: object) -> list[int]:
        """[utilisation %, sampling period µs]."""
        g = self._gpu(handle)
        if not g.has_encoder:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [g.encoder_util, 167_000]
