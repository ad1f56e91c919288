"""``python -m vos.bench {inference,...}``: measured figures, printed as a table or JSON.

Every subcommand prints, with ``--json``, one JSON list of records, each with at least
``name``, ``setting`` (an object), ``ms`` (median wall time over repeats, after warm-up) and
``peak_mb``. Figures are measured on the machine that runs the command, never asserted.
``kernels`` times nothing: it compiles the Triton kernels for a GPU target and reads what the
compiler produced (its records have ``name``, ``setting`` and the compiled figures).
"""
