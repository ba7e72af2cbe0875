"""ESC/POS receipt printer emulator: interpreter, PNG renderer, TCP and pty front ends."""
