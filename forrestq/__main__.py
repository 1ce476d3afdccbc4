"""``python -m forrestq ...``: the ``forrestq`` command line (:func:`forrestq.cli.main`)."""
from .cli import main

if __name__ == "__main__":
    main()
