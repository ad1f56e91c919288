"""``python -m vos.report``: see `vos.cli.report`."""

from vos.cli.report import main

if __name__ == "__main__":
    main()
