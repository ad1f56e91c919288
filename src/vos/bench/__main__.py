"""``python -m vos.bench``: see `vos.cli.bench`."""

from vos.cli.bench import main

if __name__ == "__main__":
    main()
