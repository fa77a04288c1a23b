"""``python -m whisperjav_enhance``: the same as the ``whisperjav-enhance`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
