"""Linli device layer: drivers for every peripheral, device configuration and shared errors."""
