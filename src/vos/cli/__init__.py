"""Thin command-line entry points: argument parsing and error reporting only."""
