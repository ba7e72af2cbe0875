"""ESC/POS receipt printer: receipt bytes, DLE EOT status codec, spooling printer driver."""
