"""power_collector: samples host power (RAPL, or an honest CPU-time estimate) → power.samples."""
