"""The parts of the command line (python -m xdrop): verify and bench."""
