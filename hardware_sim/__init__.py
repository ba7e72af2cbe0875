"""Byte-faithful emulators of every peripheral and the world API tests and technicians use."""
